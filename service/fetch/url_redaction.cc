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

// Past the slashes at `i` that precede an authority. libcurl skips only
// '/' and reads a '\' after them as part of the authority ("http://\\u@h"
// has user "\\u"), so a run that starts with '/' ends at its first '\'.
// A run that starts with '\' (which libcurl refuses) is skipped whole, as a
// browser reads it. Redacting from there covers both readings.
size_t SkipSlashes(absl::string_view s, size_t i) {
  if (i < s.size() && s[i] == '\\') {
    while (i < s.size() && IsSlash(s[i])) ++i;
  } else {
    while (i < s.size() && s[i] == '/') ++i;
  }
  return i;
}

bool IsSchemeChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '+' ||
         c == '-' || c == '.';
}

// Where the authority of `url` starts: after "scheme:" and its slashes when
// a slash follows the colon, else after any leading slashes. A scheme is
// read as libcurl 7.88 reads one, which (unlike RFC 3986) lets it start
// with a digit, '+', '-' or '.': "1tp://u:pw@h/" has user "u" to libcurl,
// so it must have userinfo here too (found by tests/fuzz).
size_t AuthorityStart(absl::string_view url) {
  size_t i = 0;
  size_t j = 0;
  while (j < url.size() && IsSchemeChar(url[j])) ++j;
  if (j > 0 && j + 1 < url.size() && url[j] == ':' && IsSlash(url[j + 1])) {
    i = j + 1;
  }
  return SkipSlashes(url, i);
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
    const size_t begin = SkipSlashes(text, sep + 1);
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
