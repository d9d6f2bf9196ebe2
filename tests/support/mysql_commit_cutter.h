#ifndef BATCHFETCH_TESTS_SUPPORT_MYSQL_COMMIT_CUTTER_H_
#define BATCHFETCH_TESTS_SUPPORT_MYSQL_COMMIT_CUTTER_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "tests/support/loopback_listener.h"

namespace batchfetch::testing {

// Splits a byte stream of the MySQL classic protocol into packets: a 3-byte
// little-endian payload length, a 1-byte sequence id, the payload. Bytes may
// arrive in any split (a header across two reads, several packets in one
// read). Only the head of each payload is kept, so memory stays bounded
// whatever the packet sizes. Not thread-safe; one per direction of one
// connection.
class MysqlPacketFramer {
 public:
  // Payload bytes kept per packet (enough for a command byte and the start
  // of its SQL text).
  static constexpr size_t kHeadBytes = 256;

  struct Packet {
    uint8_t sequence_id = 0;
    uint32_t payload_length = 0;
    // True when the previous packet had the maximum length (0xFFFFFF): this
    // one continues the same message and does not start a command.
    bool continuation = false;
    // The first min(payload_length, kHeadBytes) bytes of the payload.
    std::string head;
    // Offset just past the packet's last byte within the chunk given to
    // the Feed() call that completed it.
    size_t end = 0;
  };

  // The packets that `chunk` completes, in order.
  std::vector<Packet> Feed(std::string_view chunk);

 private:
  unsigned char header_[4] = {};
  size_t header_have_ = 0;
  bool in_payload_ = false;
  uint32_t remaining_ = 0;
  bool next_is_continuation_ = false;
  Packet current_;
};

// A client->server packet that is the text query COMMIT (COM_QUERY, 0x03;
// case-insensitive, surrounding blanks and a trailing ';' ignored): what
// MysqlSession::Commit() sends. Not COMMIT inside a longer statement.
bool IsCommitQuery(const MysqlPacketFramer::Packet& packet);

// The client's first packet (HandshakeResponse or SSLRequest) asks for TLS
// (CLIENT_SSL): the rest of the connection cannot be parsed.
bool RequestsTls(const MysqlPacketFramer::Packet& first_client_packet);

// A loopback TCP proxy in front of MySQL that loses the answer to a COMMIT,
// for testing "the connection dropped during COMMIT, outcome unknown"
// (client error 2013) on the real client library.
//
// Listens on 127.0.0.1 (ephemeral port); each accepted connection gets its
// own connection to the target and bytes are copied both ways. Client bytes
// are framed into packets (MysqlPacketFramer). When armed, a COMMIT query
// (IsCommitQuery) is forwarded to the target, and the target's answer is
// read and dropped; then both sides are closed (the client sees the
// connection lost while it waits for the answer). Waiting for the answer
// makes the outcome certain for the test (cut_commits_answered_ok() says
// the server committed) although the client cannot know it. Client bytes
// after the COMMIT packet in the same read are dropped (the classic protocol
// is request/response, so there are none).
//
// A connection whose client asks for TLS is forwarded without parsing and
// counted in tls_connections(): its COMMITs cannot be seen.
//
// One thread does all the work (poll). Thread-safety: every method may be
// called from any thread. The destructor closes every socket and joins.
class MysqlCommitCutter {
 public:
  static absl::StatusOr<std::unique_ptr<MysqlCommitCutter>> Start(
      int target_port, const std::string& target_host = "127.0.0.1");

  MysqlCommitCutter(const MysqlCommitCutter&) = delete;
  MysqlCommitCutter& operator=(const MysqlCommitCutter&) = delete;
  ~MysqlCommitCutter();

  int port() const { return listener_.port(); }

  // Cuts the next `count` COMMITs, then forwards normally again; replaces
  // any earlier arming (0 disarms). With a non-empty
  // `only_on_connections_that_sent`, only COMMITs on connections whose client
  // has sent, since this call, a command containing that text (within a
  // packet's first kHeadBytes; e.g. "INSERT INTO fetch_results" for the
  // store's writer, which prepares it on each new connection) count. After
  // each cut, the next `then_let_through` counted COMMITs go through (1: a
  // client that replays what it lost succeeds, and the cut after hits the
  // next transaction).
  void CutNextCommits(int count, std::string only_on_connections_that_sent = "",
                      int then_let_through = 0);

  // Connections accepted so far.
  int accepted() const { return accepted_.load(); }
  // COMMIT queries seen on every connection, cut or not.
  int commits_seen() const { return commits_seen_.load(); }
  // COMMITs whose answer was dropped and whose connection was closed.
  int cuts() const { return cuts_.load(); }
  // Of those, the ones the server answered OK: committed, unknown to the
  // client.
  int cut_commits_answered_ok() const { return answered_ok_.load(); }
  // Connections passed through unparsed because the client asked for TLS.
  int tls_connections() const { return tls_connections_.load(); }

 private:
  struct Connection;

  MysqlCommitCutter(LoopbackListener listener, std::string target_host,
                    int target_port);
  void Run();
  // Handles bytes the client sent; false when the connection is to close.
  bool FromClient(Connection& c, std::string_view data);
  // Handles bytes the target sent; false when the connection is to close.
  bool FromTarget(Connection& c, std::string_view data);
  // Takes one cut if armed and `c` qualifies.
  bool TakeCut(const Connection& c);

  const LoopbackListener listener_;  // the destructor wakes the loop
  const std::string target_host_;
  const int target_port_;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::atomic<int> commits_seen_{0};
  std::atomic<int> cuts_{0};
  std::atomic<int> answered_ok_{0};
  std::atomic<int> tls_connections_{0};
  std::mutex arm_mu_;
  int cuts_left_ = 0;              // guarded by arm_mu_
  std::string only_after_text_;    // guarded by arm_mu_
  uint64_t arming_ = 0;            // guarded by arm_mu_: CutNextCommits calls
  int let_through_after_cut_ = 0;  // guarded by arm_mu_
  int let_through_left_ = 0;       // guarded by arm_mu_
  std::thread thread_;
};

}  // namespace batchfetch::testing

#endif  // BATCHFETCH_TESTS_SUPPORT_MYSQL_COMMIT_CUTTER_H_
