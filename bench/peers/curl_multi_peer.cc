// The floor: a bare libcurl multi loop fetching `count` URLs with at most
// `concurrency` in flight, bodies kept in memory and dropped, nothing
// parsed or stored. Same keep-alive behaviour as the engine (one multi
// handle, one connection cache). Prints {"seconds":..,"ok":..}.
#include <curl/curl.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

size_t Collect(char* data, size_t size, size_t count, void* userp) {
  static_cast<std::string*>(userp)->append(data, size * count);
  return size * count;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s URL COUNT CONCURRENCY\n", argv[0]);
    return 2;
  }
  const std::string base = argv[1];
  const int count = std::atoi(argv[2]);
  const int concurrency = std::atoi(argv[3]);
  const char* sep = base.find('?') == std::string::npos ? "?" : "&";
  curl_global_init(CURL_GLOBAL_DEFAULT);
  CURLM* multi = curl_multi_init();
  curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS,
                    static_cast<long>(concurrency));
  std::vector<std::string> bodies(concurrency);
  std::vector<CURL*> handles(concurrency);
  std::vector<std::string> urls(count);
  for (int i = 0; i < count; ++i)
    urls[i] = base + sep + "i=" + std::to_string(i);
  int next = 0, done = 0, ok = 0;
  auto start_one = [&](int slot) {
    CURL* easy = handles[slot];
    curl_easy_reset(easy);
    bodies[slot].clear();
    curl_easy_setopt(easy, CURLOPT_URL, urls[next++].c_str());
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, Collect);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &bodies[slot]);
    curl_easy_setopt(easy, CURLOPT_PRIVATE,
                     reinterpret_cast<void*>(static_cast<intptr_t>(slot)));
    curl_multi_add_handle(multi, easy);
  };
  const auto t0 = std::chrono::steady_clock::now();
  for (int s = 0; s < concurrency; ++s) {
    handles[s] = curl_easy_init();
    if (next < count) start_one(s);
  }
  int running = 0;
  while (done < count) {
    curl_multi_perform(multi, &running);
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
    if (done < count) curl_multi_poll(multi, nullptr, 0, 1000, nullptr);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
          .count();
  std::printf("{\"seconds\":%f,\"ok\":%d}\n", seconds, ok);
  for (CURL* h : handles) curl_easy_cleanup(h);
  curl_multi_cleanup(multi);
  return 0;
}
