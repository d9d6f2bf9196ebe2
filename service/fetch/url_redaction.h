#ifndef BATCHFETCH_SERVICE_FETCH_URL_REDACTION_H_
#define BATCHFETCH_SERVICE_FETCH_URL_REDACTION_H_

// Keeps credentials a caller put in a URL (`http://user:pw@host/`) out of
// everything the service echoes: results, stored rows, logs, error texts.
// The request itself is sent as the caller asked (curl turns the userinfo
// into an Authorization header); only what is reported is redacted.
//
// Pure functions on bytes: no parsing library, no allocation beyond the
// result, thread-safe. They work on any text, valid URL or not, because an
// invalid request's URL is echoed too and must be redacted just the same.

#include <string>

#include "absl/strings/string_view.h"

namespace batchfetch {

// What replaces the userinfo: `http://***@host/path`.
inline constexpr absl::string_view kRedactedUserinfo = "***";

// `url` with its userinfo replaced by "***": "http://u:pw@h/p" becomes
// "http://***@h/p", "http://u@h" becomes "http://***@h". Anything without
// userinfo comes back unchanged.
//
// Where the authority is: after "scheme:" and the slashes that follow it
// ("scheme:" counts only when a '/' or '\' follows, so "user:pw@host" is
// read as having no scheme); with no scheme, after any leading slashes. It
// ends at the first '/', '?' or '#' (as libcurl has it), so an '@' in the
// path, query or fragment is never taken for userinfo. Within it the LAST '@'
// ends the userinfo: libcurl splits at the first '@' and then rejects the rest
// as a host name, browsers split at the last; redacting up to the last one
// hides the credentials under either reading. Percent-encoded "%40" is not an
// '@' and stays; IPv6 literals ("[::1]") contain no '@' and are untouched.
std::string RedactUserinfo(absl::string_view url);

// The userinfo RedactUserinfo would remove ("u:pw" for "http://u:pw@h/"),
// empty when there is none.
absl::string_view UserinfoOf(absl::string_view url);

// `text` (e.g. an error message) with the userinfo of every URL in it
// redacted: each "://" starts an authority, which ends at the first '/',
// '?', '#' or whitespace (not at quotes or brackets, which a password may
// contain); its last '@' ends the userinfo. Text without "://" comes
// back unchanged. A URL written without "://" is not recognised: callers
// that know the URL also remove its UserinfoOf literally.
std::string RedactUserinfoInText(absl::string_view text);

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_FETCH_URL_REDACTION_H_
