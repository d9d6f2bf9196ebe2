#include "service/fetch/url_redaction.h"

#include <cstddef>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace batchfetch {
namespace {

bool IsSlash(char c) { return c == '/' || c == '\\'; }

// Where an authority that starts at `from` ends: the first '/', '?', '#'
// (and, inside free text, whitespace) or the end of `s`. Not at '\': a
// browser would end it there, but libcurl does not, and would send
// "u:p\w" as the userinfo of "http://u:p\w@h/"; going on to the last '@'
// redacts under either reading.
size_t AuthorityEnd(absl::string_view s, size_t from, bool stop_at_space) {
  for (size_t i = from; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '/' || c == '?' || c == '#') return i;
    if (stop_at_space && absl::ascii_isspace(static_cast<unsigned char>(c))) {
      return i;
    }
  }
  return s.size();
}

// Where the authority of `url` starts: after "scheme:" and its slashes when
// a slash follows the colon, else after any leading slashes.
size_t AuthorityStart(absl::string_view url) {
  size_t i = 0;
  if (!url.empty() && absl::ascii_isalpha(static_cast<unsigned char>(url[0]))) {
    size_t j = 1;
    while (j < url.size() &&
           (absl::ascii_isalnum(static_cast<unsigned char>(url[j])) ||
            url[j] == '+' || url[j] == '-' || url[j] == '.')) {
      ++j;
    }
    if (j + 1 < url.size() && url[j] == ':' && IsSlash(url[j + 1])) {
      i = j + 1;
    }
  }
  while (i < url.size() && IsSlash(url[i])) ++i;
  return i;
}

// The position of the '@' that ends the userinfo in [begin, end), or npos.
size_t UserinfoEnd(absl::string_view s, size_t begin, size_t end) {
  const size_t at = s.substr(begin, end - begin).rfind('@');
  return at == absl::string_view::npos ? at : begin + at;
}

}  // namespace

absl::string_view UserinfoOf(absl::string_view url) {
  const size_t begin = AuthorityStart(url);
  const size_t end = AuthorityEnd(url, begin, /*stop_at_space=*/false);
  const size_t at = UserinfoEnd(url, begin, end);
  if (at == absl::string_view::npos) return absl::string_view();
  return url.substr(begin, at - begin);
}

std::string RedactUserinfo(absl::string_view url) {
  const size_t begin = AuthorityStart(url);
  const size_t end = AuthorityEnd(url, begin, /*stop_at_space=*/false);
  const size_t at = UserinfoEnd(url, begin, end);
  if (at == absl::string_view::npos) return std::string(url);
  return absl::StrCat(url.substr(0, begin), kRedactedUserinfo, url.substr(at));
}

std::string RedactUserinfoInText(absl::string_view text) {
  std::string out;
  size_t copied = 0;  // text[0, copied) is in `out` already
  size_t search = 0;
  while (true) {
    const size_t sep = text.find("://", search);
    if (sep == absl::string_view::npos) break;
    size_t begin = sep + 3;
    while (begin < text.size() && IsSlash(text[begin])) ++begin;
    const size_t end = AuthorityEnd(text, begin, /*stop_at_space=*/true);
    const size_t at = UserinfoEnd(text, begin, end);
    if (at != absl::string_view::npos) {
      absl::StrAppend(&out, text.substr(copied, begin - copied),
                      kRedactedUserinfo);
      copied = at;
    }
    search = end > sep + 3 ? end : sep + 3;
  }
  absl::StrAppend(&out, text.substr(copied));
  return out;
}

}  // namespace batchfetch
