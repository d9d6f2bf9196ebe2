#ifndef BATCHFETCH_TESTS_SUPPORT_TCP_BLACK_HOLE_PROXY_H_
#define BATCHFETCH_TESTS_SUPPORT_TCP_BLACK_HOLE_PROXY_H_

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "tests/support/loopback_listener.h"

namespace batchfetch::testing {

// A loopback TCP proxy that forwards to a target until told to become a
// black hole, for testing what a half-open connection does to a client.
//
// Listens on 127.0.0.1 (ephemeral port). Each accepted connection gets its
// own connection to the target and bytes are copied both ways. After
// StartBlackHole(): nothing is forwarded any more in either direction;
// whatever arrives is read and dropped; every socket stays open (no FIN, no
// RST), so peers see a silent, live connection; new connections are
// accepted and held the same way (never connected to the target). A
// connection closed by its client is closed on both sides.
//
// CutOnClientBytes(pattern): the next chunk a client sends that contains
// `pattern` is not forwarded; instead that connection is closed on both
// sides, as when the network drops it while the client is sending (the
// target sees EOF, the client sees EOF on its next read). Once only; a
// pattern split across two reads is not seen, so use it for short requests
// such as one MySQL command packet.
//
// One thread does all the work (poll). Thread-safety: every method may be
// called from any thread. The destructor closes every socket and joins.
class TcpBlackHoleProxy {
 public:
  static absl::StatusOr<std::unique_ptr<TcpBlackHoleProxy>> Start(
      int target_port, const std::string& target_host = "127.0.0.1");

  TcpBlackHoleProxy(const TcpBlackHoleProxy&) = delete;
  TcpBlackHoleProxy& operator=(const TcpBlackHoleProxy&) = delete;
  ~TcpBlackHoleProxy();

  int port() const { return listener_.port(); }
  void StartBlackHole() { black_hole_.store(true); }
  bool black_hole() const { return black_hole_.load(); }
  // Connections accepted so far.
  int accepted() const { return accepted_.load(); }
  // Arms (or re-arms, replacing the pattern) the one-shot cut above.
  void CutOnClientBytes(std::string pattern);
  // The same, but the chunk is forwarded before the cut: the target acts on
  // it, and its answer is lost (as when the network drops the reply).
  void CutAfterClientBytes(std::string pattern);
  // Connections cut by CutOnClientBytes so far.
  int cuts() const { return cuts_.load(); }

 private:
  TcpBlackHoleProxy(LoopbackListener listener, std::string target_host,
                    int target_port);
  void Run();

  const LoopbackListener listener_;  // the destructor wakes the loop
  const std::string target_host_;
  const int target_port_;
  std::atomic<bool> black_hole_{false};
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::atomic<int> cuts_{0};
  std::mutex cut_mu_;
  std::string cut_pattern_;  // guarded by cut_mu_; empty: not armed
  bool cut_after_ = false;   // guarded by cut_mu_: forward, then cut
  std::thread thread_;
};

}  // namespace batchfetch::testing

#endif  // BATCHFETCH_TESTS_SUPPORT_TCP_BLACK_HOLE_PROXY_H_
