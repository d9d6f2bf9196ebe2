#include "tests/support/mysql_commit_cutter.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace batchfetch::testing {
namespace {

constexpr unsigned char kComQuery = 0x03;
constexpr uint32_t kClientSsl = 0x00000800;
constexpr uint32_t kMaxPayload = 0xFFFFFF;
// How long a cut COMMIT waits for the target's answer before both sides
// are closed anyway.
constexpr absl::Duration kAnswerWait = absl::Seconds(10);

}  // namespace

std::vector<MysqlPacketFramer::Packet> MysqlPacketFramer::Feed(
    std::string_view chunk) {
  std::vector<Packet> done;
  size_t at = 0;
  while (at < chunk.size()) {
    if (!in_payload_) {
      header_[header_have_++] = static_cast<unsigned char>(chunk[at++]);
      if (header_have_ < sizeof(header_)) continue;
      header_have_ = 0;
      current_ = Packet();
      current_.payload_length = static_cast<uint32_t>(header_[0]) |
                                static_cast<uint32_t>(header_[1]) << 8 |
                                static_cast<uint32_t>(header_[2]) << 16;
      current_.sequence_id = header_[3];
      current_.continuation = next_is_continuation_;
      next_is_continuation_ = current_.payload_length == kMaxPayload;
      remaining_ = current_.payload_length;
      in_payload_ = true;
    }
    // In a payload (possibly empty: then it completes right after its
    // header).
    const size_t take =
        std::min(static_cast<size_t>(remaining_), chunk.size() - at);
    if (current_.head.size() < kHeadBytes) {
      current_.head.append(
          chunk.substr(at, std::min(take, kHeadBytes - current_.head.size())));
    }
    at += take;
    remaining_ -= static_cast<uint32_t>(take);
    if (remaining_ == 0) {
      current_.end = at;
      done.push_back(std::move(current_));
      current_ = Packet();
      in_payload_ = false;
    }
  }
  return done;
}

bool IsCommitQuery(const MysqlPacketFramer::Packet& packet) {
  if (packet.continuation || packet.sequence_id != 0 || packet.head.empty() ||
      static_cast<unsigned char>(packet.head[0]) != kComQuery ||
      packet.head.size() != packet.payload_length) {
    return false;
  }
  absl::string_view sql =
      absl::StripAsciiWhitespace(absl::string_view(packet.head).substr(1));
  if (absl::ConsumeSuffix(&sql, ";")) {
    sql = absl::StripTrailingAsciiWhitespace(sql);
  }
  return absl::EqualsIgnoreCase(sql, "commit");
}

bool RequestsTls(const MysqlPacketFramer::Packet& first_client_packet) {
  const std::string& h = first_client_packet.head;
  if (h.size() < 4) return false;
  const uint32_t capabilities =
      static_cast<uint32_t>(static_cast<unsigned char>(h[0])) |
      static_cast<uint32_t>(static_cast<unsigned char>(h[1])) << 8;
  return (capabilities & kClientSsl) != 0;
}

// One client connection and its connection to the target.
struct MysqlCommitCutter::Connection {
  int client = -1;
  int target = -1;
  MysqlPacketFramer client_framer;
  bool first_packet_seen = false;
  bool opaque = false;  // TLS: forwarded without parsing
  // The CutNextCommits call whose text this connection has sent (0: none).
  uint64_t sent_text_for_arming = 0;
  // A COMMIT was forwarded and cut: the target's answer is awaited, to be
  // dropped; the client is no longer read.
  bool awaiting_answer = false;
  absl::Time answer_deadline;
  MysqlPacketFramer answer_framer;
};

absl::StatusOr<std::unique_ptr<MysqlCommitCutter>> MysqlCommitCutter::Start(
    int target_port, const std::string& target_host) {
  absl::StatusOr<LoopbackListener> listener = LoopbackListener::Open();
  if (!listener.ok()) return listener.status();
  return std::unique_ptr<MysqlCommitCutter>(
      new MysqlCommitCutter(*std::move(listener), target_host, target_port));
}

MysqlCommitCutter::MysqlCommitCutter(LoopbackListener listener,
                                     std::string target_host, int target_port)
    : listener_(std::move(listener)),
      target_host_(std::move(target_host)),
      target_port_(target_port) {
  thread_ = std::thread([this] { Run(); });
}

MysqlCommitCutter::~MysqlCommitCutter() {
  stop_.store(true);
  listener_.Wake();
  thread_.join();
}

void MysqlCommitCutter::CutNextCommits(
    int count, std::string only_on_connections_that_sent,
    int then_let_through) {
  std::lock_guard<std::mutex> lock(arm_mu_);
  cuts_left_ = std::max(0, count);
  only_after_text_ = std::move(only_on_connections_that_sent);
  let_through_after_cut_ = std::max(0, then_let_through);
  let_through_left_ = 0;
  ++arming_;
}

bool MysqlCommitCutter::TakeCut(const Connection& c) {
  std::lock_guard<std::mutex> lock(arm_mu_);
  if (cuts_left_ == 0) return false;
  if (!only_after_text_.empty() && c.sent_text_for_arming != arming_) {
    return false;
  }
  if (let_through_left_ > 0) {
    --let_through_left_;
    return false;
  }
  --cuts_left_;
  let_through_left_ = let_through_after_cut_;
  return true;
}

bool MysqlCommitCutter::FromClient(Connection& c, std::string_view data) {
  if (c.opaque) return SendAll(c.target, data.data(), data.size());
  for (const MysqlPacketFramer::Packet& packet : c.client_framer.Feed(data)) {
    if (!c.first_packet_seen) {
      c.first_packet_seen = true;
      if (RequestsTls(packet)) {
        // Everything after this packet is TLS.
        c.opaque = true;
        tls_connections_.fetch_add(1);
        return SendAll(c.target, data.data(), data.size());
      }
    }
    if (packet.continuation || packet.sequence_id != 0) continue;
    {
      std::lock_guard<std::mutex> lock(arm_mu_);
      if (!only_after_text_.empty() &&
          absl::StrContains(packet.head, only_after_text_)) {
        c.sent_text_for_arming = arming_;
      }
    }
    if (!IsCommitQuery(packet)) continue;
    commits_seen_.fetch_add(1);
    if (!TakeCut(c)) continue;
    // The target gets the COMMIT (and what preceded it), nothing after.
    if (!SendAll(c.target, data.data(), packet.end)) return false;
    c.awaiting_answer = true;
    c.answer_deadline = absl::Now() + kAnswerWait;
    return true;
  }
  return SendAll(c.target, data.data(), data.size());
}

bool MysqlCommitCutter::FromTarget(Connection& c, std::string_view data) {
  if (!c.awaiting_answer) return SendAll(c.client, data.data(), data.size());
  std::vector<MysqlPacketFramer::Packet> answer = c.answer_framer.Feed(data);
  if (answer.empty()) return true;  // the rest of the answer is to come
  cuts_.fetch_add(1);
  if (!answer.front().head.empty() && answer.front().head[0] == 0x00) {
    answered_ok_.fetch_add(1);
  }
  return false;  // dropped: close both sides
}

void MysqlCommitCutter::Run() {
  std::vector<std::unique_ptr<Connection>> connections;
  std::vector<char> buffer(64 * 1024);

  while (!stop_.load()) {
    std::vector<pollfd> fds;
    fds.push_back({listener_.listen_fd(), POLLIN, 0});
    fds.push_back({listener_.wake_fd(), POLLIN, 0});
    bool any_awaiting = false;
    // For each connection: the client (not read while its COMMIT's answer
    // is awaited), then the target.
    for (const auto& c : connections) {
      fds.push_back({c->awaiting_answer ? -1 : c->client, POLLIN, 0});
      fds.push_back({c->target, POLLIN, 0});
      any_awaiting = any_awaiting || c->awaiting_answer;
    }
    if (poll(fds.data(), fds.size(), any_awaiting ? 100 : 1000) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (stop_.load()) break;
    const absl::Time now = absl::Now();
    for (size_t i = 0; i < connections.size(); ++i) {
      Connection& c = *connections[i];
      bool keep = true;
      for (int side = 0; side < 2 && keep; ++side) {
        const pollfd& pfd = fds[2 + 2 * i + side];
        if (pfd.fd < 0 || pfd.revents == 0) continue;
        ssize_t n = read(pfd.fd, buffer.data(), buffer.size());
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          if (c.awaiting_answer) cuts_.fetch_add(1);  // closed, unanswered
          keep = false;
          break;
        }
        const std::string_view data(buffer.data(), static_cast<size_t>(n));
        keep = side == 0 ? FromClient(c, data) : FromTarget(c, data);
      }
      if (keep && c.awaiting_answer && now > c.answer_deadline) {
        cuts_.fetch_add(1);  // no answer in time
        keep = false;
      }
      if (!keep) {
        CloseFd(c.client);
        CloseFd(c.target);
      }
    }
    connections.erase(
        std::remove_if(connections.begin(), connections.end(),
                       [](const auto& c) { return c->client < 0; }),
        connections.end());
    if (fds[0].revents & POLLIN) {
      int client = listener_.Accept();
      if (client >= 0) {
        accepted_.fetch_add(1);
        const int target = ConnectTo(target_host_, target_port_);
        if (target < 0) {
          close(client);
        } else {
          auto c = std::make_unique<Connection>();
          c->client = client;
          c->target = target;
          connections.push_back(std::move(c));
        }
      }
    }
  }
  for (auto& c : connections) {
    CloseFd(c->client);
    CloseFd(c->target);
  }
}

}  // namespace batchfetch::testing
