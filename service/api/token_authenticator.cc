#include "service/api/token_authenticator.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <fstream>
#include <map>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace batchfetch {
namespace {

using Digest = std::array<uint8_t, 32>;

Digest Sha256(std::string_view data) {
  Digest digest;
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(),
         digest.data());
  return digest;
}

bool IsNameChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' ||
         c == '_' || c == '@' || c == '-';
}

// Printable ASCII other than space (a token travels in an HTTP/2 header).
bool IsTokenChar(char c) { return c > ' ' && c < 0x7f; }

bool IsBlank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

// Splits `line` into fields separated by spaces or tabs.
std::vector<std::string_view> Fields(std::string_view line) {
  std::vector<std::string_view> fields;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && IsBlank(line[i])) ++i;
    const size_t start = i;
    while (i < line.size() && !IsBlank(line[i])) ++i;
    if (i > start) fields.push_back(line.substr(start, i - start));
  }
  return fields;
}

}  // namespace

absl::StatusOr<std::vector<TokenEntry>> ParseTokenFile(
    std::string_view contents) {
  std::vector<TokenEntry> entries;
  std::map<std::string, int> name_lines;
  std::map<Digest, int> token_lines;
  int line_number = 0;
  size_t pos = 0;
  while (pos < contents.size()) {
    size_t end = contents.find('\n', pos);
    if (end == std::string_view::npos) end = contents.size();
    const std::string_view line = contents.substr(pos, end - pos);
    pos = end + 1;
    ++line_number;
    const std::vector<std::string_view> fields = Fields(line);
    if (fields.empty() || fields[0][0] == '#') continue;
    const auto error = [&](const std::string& what) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", line_number, ": ", what));
    };
    if (fields.size() != 2) {
      return error("expected '<name> <token>' (two fields)");
    }
    const std::string_view name = fields[0];
    const std::string_view token = fields[1];
    if (name.size() > kMaxIdentityNameLength) {
      return error(absl::StrCat("name is longer than ", kMaxIdentityNameLength,
                                " characters"));
    }
    for (char c : name) {
      if (!IsNameChar(c)) {
        return error("name may hold only letters, digits and . _ @ -");
      }
    }
    if (token.size() < kMinTokenLength) {
      return error(absl::StrCat("token is shorter than ", kMinTokenLength,
                                " characters"));
    }
    for (char c : token) {
      if (!IsTokenChar(c)) {
        return error("token has a character that is not printable ASCII");
      }
    }
    TokenEntry entry{std::string(name), Sha256(token)};
    if (auto [it, added] = name_lines.emplace(entry.name, line_number);
        !added) {
      return error(absl::StrCat("name '", entry.name,
                                "' was already given on line ", it->second));
    }
    if (auto [it, added] = token_lines.emplace(entry.digest, line_number);
        !added) {
      return error(absl::StrCat("same token as on line ", it->second));
    }
    entries.push_back(std::move(entry));
  }
  if (entries.empty()) {
    return absl::InvalidArgumentError("no '<name> <token>' line");
  }
  return entries;
}

absl::StatusOr<std::unique_ptr<TokenAuthenticator>>
TokenAuthenticator::FromFile(std::string path) {
  auto authenticator =
      std::make_unique<TokenAuthenticator>(std::vector<TokenEntry>{}, path);
  if (absl::Status loaded = authenticator->Reload(); !loaded.ok()) {
    return loaded;
  }
  return authenticator;
}

TokenAuthenticator::TokenAuthenticator(std::vector<TokenEntry> entries,
                                       std::string path)
    : path_(std::move(path)),
      entries_(std::make_shared<const Entries>(std::move(entries))) {}

absl::Status TokenAuthenticator::Reload() {
  const std::string prefix = absl::StrCat("--auth_token_file ", path_);
  std::ifstream in(path_);
  std::stringstream contents;
  if (!in || !(contents << in.rdbuf())) {
    return absl::InvalidArgumentError(absl::StrCat(prefix, ": cannot be read"));
  }
  absl::StatusOr<Entries> parsed = ParseTokenFile(contents.str());
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, ": ", parsed.status().message()));
  }
  auto entries = std::make_shared<const Entries>(*std::move(parsed));
  absl::MutexLock lock(&mu_);
  entries_.swap(entries);
  return absl::OkStatus();  // the old set is released after the lock
}

size_t TokenAuthenticator::token_count() const {
  absl::MutexLock lock(&mu_);
  return entries_->size();
}

absl::StatusOr<std::string> TokenAuthenticator::Authenticate(
    const std::vector<std::string_view>& authorization) const {
  if (authorization.empty()) {
    return absl::UnauthenticatedError(
        "missing 'authorization: Bearer <token>' metadata");
  }
  if (authorization.size() > 1) {
    return absl::UnauthenticatedError(
        "more than one 'authorization' metadata value");
  }
  std::string_view value = authorization[0];
  constexpr std::string_view kScheme = "bearer ";
  if (value.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(
          absl::string_view(value.data(), kScheme.size()),
          absl::string_view(kScheme.data(), kScheme.size()))) {
    return absl::UnauthenticatedError(
        "'authorization' metadata is not 'Bearer <token>'");
  }
  value.remove_prefix(kScheme.size());
  while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  while (!value.empty() && value.back() == ' ') value.remove_suffix(1);
  const Digest presented = Sha256(value);

  std::shared_ptr<const Entries> entries;
  {
    absl::MutexLock lock(&mu_);
    entries = entries_;
  }
  // Every digest is compared, whatever matched before: no early exit.
  const TokenEntry* match = nullptr;
  for (const TokenEntry& entry : *entries) {
    const bool equal = CRYPTO_memcmp(presented.data(), entry.digest.data(),
                                     presented.size()) == 0;
    if (equal) match = &entry;
  }
  if (match == nullptr) {
    return absl::UnauthenticatedError("bearer token is not valid");
  }
  return match->name;
}

}  // namespace batchfetch
