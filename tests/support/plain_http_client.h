// A minimal blocking HTTP/1.0 client for tests that scrape a loopback
// endpoint (GET /metrics): one request per connection, the whole answer
// read until the server closes. Header-only, POSIX sockets, IPv4 loopback.
#ifndef BATCHFETCH_TESTS_SUPPORT_PLAIN_HTTP_CLIENT_H_
#define BATCHFETCH_TESTS_SUPPORT_PLAIN_HTTP_CLIENT_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace batchfetch {
namespace testing {

struct PlainHttpResponse {
  int status = 0;
  std::string content_type;  // the Content-Type header's value
  // Every header by its lower-cased name (the last one of a repeated name).
  std::map<std::string, std::string> headers;
  std::string body;
};

// Sends `method path` to 127.0.0.1:`port` and reads the answer (5 s socket
// timeouts). An error when the connection or the answer fails.
inline absl::StatusOr<PlainHttpResponse> PlainHttpRequest(
    int port, const std::string& method, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(std::strerror(errno));
  timeval timeout{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) !=
      0) {
    const std::string error = std::strerror(errno);
    close(fd);
    return absl::UnavailableError(absl::StrCat("connect: ", error));
  }
  const std::string request = absl::StrCat(method, " ", path,
                                           " HTTP/1.0\r\nHost: 127.0.0.1\r\n"
                                           "Connection: close\r\n\r\n");
  if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    close(fd);
    return absl::UnavailableError("send failed");
  }
  std::string raw;
  char buffer[16384];
  while (true) {
    const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n < 0) {
      const std::string error = std::strerror(errno);
      close(fd);
      return absl::UnavailableError(absl::StrCat("recv: ", error));
    }
    if (n == 0) break;
    raw.append(buffer, static_cast<size_t>(n));
  }
  close(fd);
  const size_t head_end = raw.find("\r\n\r\n");
  if (head_end == std::string::npos) {
    return absl::DataLossError(absl::StrCat("no end of headers in: ", raw));
  }
  PlainHttpResponse response;
  response.body = raw.substr(head_end + 4);
  bool first = true;
  for (absl::string_view line :
       absl::StrSplit(absl::string_view(raw).substr(0, head_end), "\r\n")) {
    if (first) {
      first = false;
      // "HTTP/1.1 200 OK"
      std::vector<absl::string_view> parts = absl::StrSplit(line, ' ');
      if (parts.size() < 2) return absl::DataLossError("bad status line");
      response.status = std::atoi(std::string(parts[1]).c_str());
      continue;
    }
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos) continue;
    const std::string name = absl::AsciiStrToLower(line.substr(0, colon));
    const std::string value(absl::StripAsciiWhitespace(line.substr(colon + 1)));
    if (name == "content-type") response.content_type = value;
    response.headers[name] = value;
  }
  return response;
}

inline absl::StatusOr<PlainHttpResponse> PlainHttpGet(int port,
                                                      const std::string& path) {
  return PlainHttpRequest(port, "GET", path);
}

}  // namespace testing
}  // namespace batchfetch

#endif  // BATCHFETCH_TESTS_SUPPORT_PLAIN_HTTP_CLIENT_H_
