// The floor: a bare libcurl multi loop fetching `count` URLs with at most
// `concurrency` in flight, bodies kept in memory and dropped, nothing
// parsed or stored. Same keep-alive behaviour as the engine (one multi
// handle, one connection cache). Prints {"seconds":..,"ok":..}.
//
// Options after the three arguments, for taking the engine's overhead apart
// (bench/run.py uses none of them; see the profiling notes in the report):
//   --engine_opts    the per-handle options FetchEngine sets (timeouts,
//                    low-speed check, Accept-Encoding, redirects, protocols,
//                    user agent, Accept/Expect headers, error buffer), and
//                    handles reused without curl_easy_reset, as the engine
//                    does.
//   --socket_action  drive libcurl the way the engine does: epoll +
//                    CURLMOPT_SOCKETFUNCTION/TIMERFUNCTION +
//                    curl_multi_socket_action per ready socket, instead of
//                    curl_multi_perform + curl_multi_poll.
//   --maxconnects=N  CURLMOPT_MAXCONNECTS per multi handle (default:
//                    concurrency; the server uses --max_in_flight).
//   --shards=N       with --socket_action: N multi handles (each with its
//                    own connection cache) on one epoll loop, transfers
//                    dealt round-robin. libcurl scans a host's connections
//                    on every add and remove, so smaller caches scan less.
//   --lazy_epoll     with --socket_action: leave a socket in epoll when
//                    libcurl says CURL_POLL_REMOVE (an idle keep-alive
//                    connection), skip epoll_ctl when the wanted events are
//                    already registered, and drop it only if it reports an
//                    event while unwanted. New sockets are seen through
//                    CURLOPT_OPENSOCKETFUNCTION, so a reused descriptor
//                    number is registered afresh.
//   --no_proxy_env   CURLOPT_PROXY "" (no proxy environment lookups).
//   --skip=a,b       with --engine_opts, leave out some of them: timeout,
//                    lowspeed, connecttimeout, encoding, follow, multiplex,
//                    headers, http2, errorbuf, maxfilesize, protocols,
//                    useragent.
#include <curl/curl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

size_t Collect(char* data, size_t size, size_t count, void* userp) {
  static_cast<std::string*>(userp)->append(data, size * count);
  return size * count;
}

struct Shared {
  int epoll_fd = -1;
  bool lazy = false;
  // --lazy_epoll: events registered per descriptor (0 = not in epoll), and
  // whether libcurl currently wants it watched.
  std::vector<uint32_t> registered;
  std::vector<char> wanted;
};

struct Loop {
  Shared* shared = nullptr;
  uint32_t shard = 0;
  CURLM* multi = nullptr;
  long timeout_ms = -1;  // curl's timer; -1 = none
  std::chrono::steady_clock::time_point timer_set;
};

uint64_t EventData(uint32_t shard, curl_socket_t fd) {
  return (static_cast<uint64_t>(shard) << 32) | static_cast<uint32_t>(fd);
}

int OnSocket(CURL*, curl_socket_t fd, int what, void* userp, void* socketp) {
  auto* loop = static_cast<Loop*>(userp);
  Shared& sh = *loop->shared;
  const bool lazy =
      sh.lazy && fd >= 0 && static_cast<size_t>(fd) < sh.registered.size();
  if (what == CURL_POLL_REMOVE) {
    if (lazy) {
      sh.wanted[fd] = 0;  // stays registered until it reports something
    } else {
      epoll_ctl(sh.epoll_fd, EPOLL_CTL_DEL, fd, nullptr);
    }
    return 0;
  }
  epoll_event ev{};
  ev.data.u64 = EventData(loop->shard, fd);
  ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0u) |
              ((what & CURL_POLL_OUT) ? EPOLLOUT : 0u);
  if (lazy) {
    sh.wanted[fd] = 1;
    if (sh.registered[fd] != ev.events) {
      const int op = sh.registered[fd] == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
      if (epoll_ctl(sh.epoll_fd, op, fd, &ev) != 0) {
        epoll_ctl(sh.epoll_fd,
                  op == EPOLL_CTL_ADD ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev);
      }
      sh.registered[fd] = ev.events;
    }
  } else {
    const int op = socketp == nullptr ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
    if (epoll_ctl(sh.epoll_fd, op, fd, &ev) != 0) {
      epoll_ctl(sh.epoll_fd,
                op == EPOLL_CTL_ADD ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev);
    }
  }
  if (socketp == nullptr) {
    curl_multi_assign(loop->multi, fd, reinterpret_cast<void*>(1));
  }
  return 0;
}

// A new socket: whatever its descriptor number was registered as before
// was dropped from epoll by close().
curl_socket_t OnOpenSocket(void* clientp, curlsocktype,
                           curl_sockaddr* address) {
  auto* sh = static_cast<Shared*>(clientp);
  const curl_socket_t fd =
      socket(address->family, address->socktype, address->protocol);
  if (fd >= 0 && static_cast<size_t>(fd) < sh->registered.size()) {
    sh->registered[fd] = 0;
    sh->wanted[fd] = 0;
  }
  return fd;
}

int OnTimer(CURLM*, long timeout_ms, void* userp) {
  auto* loop = static_cast<Loop*>(userp);
  loop->timeout_ms = timeout_ms;
  loop->timer_set = std::chrono::steady_clock::now();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(
        stderr,
        "usage: %s URL COUNT CONCURRENCY [--engine_opts] "
        "[--socket_action] [--maxconnects=N] [--no_proxy_env] [--skip=..] "
        "[--shards=N] [--lazy_epoll]\n",
        argv[0]);
    return 2;
  }
  const std::string base = argv[1];
  const int count = std::atoi(argv[2]);
  const int concurrency = std::atoi(argv[3]);
  bool engine_opts = false, socket_action = false, no_proxy_env = false;
  bool lazy_epoll = false;
  int shards = 1;
  long maxconnects = concurrency;
  std::string skip;
  for (int i = 4; i < argc; ++i) {
    if (std::strcmp(argv[i], "--engine_opts") == 0) {
      engine_opts = true;
    } else if (std::strcmp(argv[i], "--socket_action") == 0) {
      socket_action = true;
    } else if (std::strcmp(argv[i], "--no_proxy_env") == 0) {
      no_proxy_env = true;
    } else if (std::strcmp(argv[i], "--lazy_epoll") == 0) {
      lazy_epoll = true;
    } else if (std::strncmp(argv[i], "--shards=", 9) == 0) {
      shards = std::max(1, std::atoi(argv[i] + 9));
    } else if (std::strncmp(argv[i], "--skip=", 7) == 0) {
      skip = std::string(",") + (argv[i] + 7) + ",";
    } else if (std::strncmp(argv[i], "--maxconnects=", 14) == 0) {
      maxconnects = std::atol(argv[i] + 14);
    } else {
      std::fprintf(stderr, "unknown option %s\n", argv[i]);
      return 2;
    }
  }
  const auto use = [&](const char* option) {
    return skip.find(std::string(",") + option + ",") == std::string::npos;
  };
  const char* sep = base.find('?') == std::string::npos ? "?" : "&";
  if (!socket_action) shards = 1;
  curl_global_init(CURL_GLOBAL_DEFAULT);
  Shared shared;
  shared.lazy = lazy_epoll && socket_action;
  if (shared.lazy) {
    shared.registered.assign(1 << 16, 0);
    shared.wanted.assign(1 << 16, 0);
  }
  std::vector<Loop> loops(static_cast<size_t>(shards));
  if (socket_action) shared.epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  for (int i = 0; i < shards; ++i) {
    Loop& loop = loops[static_cast<size_t>(i)];
    loop.shared = &shared;
    loop.shard = static_cast<uint32_t>(i);
    loop.multi = curl_multi_init();
    CURLM* multi = loop.multi;
    curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, maxconnects);
    if (socket_action) {
      curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, OnSocket);
      curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, &loop);
      curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, OnTimer);
      curl_multi_setopt(multi, CURLMOPT_TIMERDATA, &loop);
    }
    if (engine_opts && use("multiplex")) {
      curl_multi_setopt(multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
    }
  }
  CURLM* multi = loops[0].multi;  // the only one without --shards
  auto multi_of = [&](int slot) {
    return loops[static_cast<size_t>(slot % shards)].multi;
  };
  curl_slist* headers = curl_slist_append(nullptr, "Accept: application/json");
  headers = curl_slist_append(headers, "Expect:");
  std::vector<std::string> bodies(concurrency);
  std::vector<CURL*> handles(concurrency);
  std::vector<std::vector<char>> errors(concurrency,
                                        std::vector<char>(CURL_ERROR_SIZE));
  std::vector<std::string> urls(count);
  for (int i = 0; i < count; ++i)
    urls[i] = base + sep + "i=" + std::to_string(i);
  int next = 0, done = 0, ok = 0;
  // Options the engine sets once per handle (FetchEngine::Impl::TakeEasy).
  auto common = [&](CURL* easy) {
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    if (shared.lazy) {
      curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, OnOpenSocket);
      curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, &shared);
    }
    if (no_proxy_env) curl_easy_setopt(easy, CURLOPT_PROXY, "");
    if (!engine_opts) return;
    if (use("protocols")) {
      curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
      curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    }
    if (use("follow")) {
      curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 1L);
      curl_easy_setopt(easy, CURLOPT_MAXREDIRS, 5L);
    }
    if (use("connecttimeout")) {
      curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    }
    if (use("lowspeed")) {
      curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 64L);
      curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, 10L);
    }
    if (use("encoding")) curl_easy_setopt(easy, CURLOPT_ACCEPT_ENCODING, "");
    if (use("maxfilesize")) {
      curl_easy_setopt(easy, CURLOPT_MAXFILESIZE_LARGE,
                       static_cast<curl_off_t>(8 << 20));
    }
    if (use("useragent")) {
      curl_easy_setopt(easy, CURLOPT_USERAGENT, "batchfetch/1.0");
    }
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, Collect);
    if (use("http2")) {
      curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_2TLS);
    }
  };
  auto start_one = [&](int slot) {
    CURL* easy = handles[slot];
    bodies[slot].clear();
    if (!engine_opts) {
      curl_easy_reset(easy);
      common(easy);
      curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, Collect);
    } else {
      // What FetchEngine::Impl::Start sets per request for a plain GET.
      if (use("errorbuf")) {
        curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, errors[slot].data());
      }
      if (use("timeout")) curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, 30000L);
      curl_easy_setopt(easy, CURLOPT_POSTFIELDS, nullptr);
      curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, nullptr);
      curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
      curl_easy_setopt(easy, CURLOPT_POSTREDIR, 0L);
      if (use("headers")) curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
    }
    curl_easy_setopt(easy, CURLOPT_URL, urls[next++].c_str());
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &bodies[slot]);
    curl_easy_setopt(easy, CURLOPT_PRIVATE,
                     reinterpret_cast<void*>(static_cast<intptr_t>(slot)));
    curl_multi_add_handle(multi_of(slot), easy);
  };
  auto collect = [&](CURLM* multi) {
    int left = 0;
    while (CURLMsg* msg = curl_multi_info_read(multi, &left)) {
      if (msg->msg != CURLMSG_DONE) continue;
      void* priv = nullptr;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
      const int slot = static_cast<int>(reinterpret_cast<intptr_t>(priv));
      long status = 0;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
      if (msg->data.result == CURLE_OK && status == 200) ++ok;
      ++done;
      curl_multi_remove_handle(multi, msg->easy_handle);
      if (next < count) start_one(slot);
    }
  };
  const auto t0 = std::chrono::steady_clock::now();
  for (int s = 0; s < concurrency; ++s) {
    handles[s] = curl_easy_init();
    common(handles[s]);
    if (next < count) start_one(s);
  }
  int running = 0;
  if (socket_action) {
    // The engine's loop (FetchEngine::Impl::Run) without its bookkeeping.
    epoll_event events[256];
    while (done < count) {
      int wait_ms = -1;
      const auto now = std::chrono::steady_clock::now();
      for (const Loop& loop : loops) {
        if (loop.timeout_ms < 0) continue;
        const auto due =
            loop.timer_set + std::chrono::milliseconds(loop.timeout_ms);
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(due - now);
        const int ms = left.count() <= 0 ? 0 : static_cast<int>(left.count());
        wait_ms = wait_ms < 0 ? ms : std::min(wait_ms, ms);
      }
      const int n = epoll_wait(shared.epoll_fd, events, 256, wait_ms);
      for (int i = 0; i < n; ++i) {
        const auto fd = static_cast<curl_socket_t>(events[i].data.u64);
        Loop& loop = loops[events[i].data.u64 >> 32];
        if (shared.lazy && !shared.wanted[fd]) {
          // An idle connection left registered spoke (usually: closed).
          epoll_ctl(shared.epoll_fd, EPOLL_CTL_DEL, fd, nullptr);
          shared.registered[fd] = 0;
          continue;
        }
        int flags = 0;
        if (events[i].events & EPOLLIN) flags |= CURL_CSELECT_IN;
        if (events[i].events & EPOLLOUT) flags |= CURL_CSELECT_OUT;
        if (events[i].events & (EPOLLERR | EPOLLHUP)) flags |= CURL_CSELECT_ERR;
        curl_multi_socket_action(loop.multi, fd, flags, &running);
      }
      const auto after = std::chrono::steady_clock::now();
      for (Loop& loop : loops) {
        if (loop.timeout_ms >= 0 &&
            after >=
                loop.timer_set + std::chrono::milliseconds(loop.timeout_ms)) {
          loop.timeout_ms = -1;
          curl_multi_socket_action(loop.multi, CURL_SOCKET_TIMEOUT, 0,
                                   &running);
        }
      }
      for (Loop& loop : loops) collect(loop.multi);
    }
  } else {
    while (done < count) {
      curl_multi_perform(multi, &running);
      collect(multi);
      if (done < count) curl_multi_poll(multi, nullptr, 0, 1000, nullptr);
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count();
  std::printf("{\"seconds\":%f,\"ok\":%d}\n", seconds, ok);
  for (CURL* h : handles) curl_easy_cleanup(h);
  for (Loop& loop : loops) curl_multi_cleanup(loop.multi);
  curl_slist_free_all(headers);
  if (shared.epoll_fd >= 0) close(shared.epoll_fd);
  return 0;
}
