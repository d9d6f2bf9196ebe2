#include "service/fetch/url_redaction.h"

#include <string>

#include "gtest/gtest.h"

namespace batchfetch {
namespace {

struct Case {
  const char* url;
  const char* redacted;
};

TEST(RedactUserinfo, ReplacesUserAndPasswordOrUserAlone) {
  const Case cases[] = {
      {"http://user:pw@host/path", "http://***@host/path"},
      {"https://user@host", "https://***@host"},
      {"http://user:@host:8080/", "http://***@host:8080/"},
      {"http://:pw@host/", "http://***@host/"},
      {"http://@host/", "http://***@host/"},
      {"HTTP://User:Pw@Host/P?q=1#f", "HTTP://***@Host/P?q=1#f"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(RedactUserinfo(c.url), c.redacted) << c.url;
  }
}

TEST(RedactUserinfo, AnAtInThePathQueryOrFragmentIsNotUserinfo) {
  for (const char* url :
       {"http://host/a@b", "http://host/p?mail=a@b.example",
        "http://host?x=u:p@h", "http://host#u:p@h", "http://host/x/@/y@z",
        "https://host:8443/", "http://host", ""}) {
    EXPECT_EQ(RedactUserinfo(url), url) << url;
  }
}

TEST(RedactUserinfo, ABackslashDoesNotEndTheAuthority) {
  // libcurl sends "u:p\w" as the userinfo here; a browser would read
  // "h\u:p@x" as host and path. Redacting to the last '@' covers both.
  EXPECT_EQ(RedactUserinfo("http://u:p\\w@host/"), "http://***@host/");
  EXPECT_EQ(RedactUserinfo("http://host\\u:p@h/x"), "http://***@h/x");
  EXPECT_EQ(RedactUserinfoInText("to http://u:p\\w@host/ failed"),
            "to http://***@host/ failed");
}

TEST(RedactUserinfo, ABackslashAfterTheSlashesStartsTheUserinfo) {
  // libcurl reads "\\u" as the user here (a browser "u").
  EXPECT_EQ(RedactUserinfo("http://\\\\u:p@host/"), "http://***@host/");
  EXPECT_EQ(UserinfoOf("http://\\\\@host/"), "\\\\");
  EXPECT_EQ(RedactUserinfoInText("at http://\\u@host/"), "at http://***@host/");
}

TEST(RedactUserinfo, TheLastAtOfTheAuthorityEndsTheUserinfo) {
  // libcurl splits at the first '@' (and then rejects "pw@host" as a host),
  // browsers at the last: either way nothing before the last one shows.
  EXPECT_EQ(RedactUserinfo("http://u@x:p@w@host/path@q"),
            "http://***@host/path@q");
  EXPECT_EQ(RedactUserinfo("http://a@b@c"), "http://***@c");
}

TEST(RedactUserinfo, Ipv6HostsAreKept) {
  EXPECT_EQ(RedactUserinfo("http://[::1]:8080/a@b"), "http://[::1]:8080/a@b");
  EXPECT_EQ(RedactUserinfo("http://u:p@[::1]:8080/"), "http://***@[::1]:8080/");
  EXPECT_EQ(RedactUserinfo("http://u:p@[fe80::1%25eth0]/"),
            "http://***@[fe80::1%25eth0]/");
}

TEST(RedactUserinfo, PercentEncodedAtIsPartOfTheUserinfoNotItsEnd) {
  EXPECT_EQ(RedactUserinfo("http://us%40er:p%40ss%3A@host/"),
            "http://***@host/");
  // No real '@': "%40" in a host or path is not userinfo.
  EXPECT_EQ(RedactUserinfo("http://us%40host/p%40q"), "http://us%40host/p%40q");
}

TEST(RedactUserinfo, WithoutASchemeTheAuthorityStartsTheString) {
  // "user:" is not taken for a scheme: no slash follows the colon.
  EXPECT_EQ(RedactUserinfo("user:pw@host/path"), "***@host/path");
  EXPECT_EQ(RedactUserinfo("user@host"), "***@host");
  EXPECT_EQ(RedactUserinfo("//user:pw@host/x"), "//***@host/x");
  EXPECT_EQ(RedactUserinfo("http:user:pw@host/"), "***@host/");
  // Odd slash counts that libcurl may still accept.
  EXPECT_EQ(RedactUserinfo("http:/user:pw@host/"), "http:/***@host/");
  EXPECT_EQ(RedactUserinfo("http:///user:pw@host/"), "http:///***@host/");
  EXPECT_EQ(RedactUserinfo("http:\\\\user:pw@host/"), "http:\\\\***@host/");
  EXPECT_EQ(RedactUserinfo("not a url"), "not a url");
}

TEST(RedactUserinfo, ASchemeMayStartWithWhatLibcurlAccepts) {
  // libcurl 7.88 reads "1tp", "+x" and ".x" as schemes with user "u".
  EXPECT_EQ(RedactUserinfo("1tp://u:pw@h/"), "1tp://***@h/");
  EXPECT_EQ(RedactUserinfo("+x://u:pw@h/"), "+x://***@h/");
  EXPECT_EQ(RedactUserinfo(".x:/u@h"), ".x:/***@h");
}

TEST(RedactUserinfo, IsIdempotent) {
  const std::string once = RedactUserinfo("http://u:p@h/");
  EXPECT_EQ(RedactUserinfo(once), once);
}

TEST(UserinfoOf, IsWhatRedactUserinfoRemoves) {
  EXPECT_EQ(UserinfoOf("http://user:pw@host/"), "user:pw");
  EXPECT_EQ(UserinfoOf("http://u@x:p@w@host/"), "u@x:p@w");
  EXPECT_EQ(UserinfoOf("user@host"), "user");
  EXPECT_EQ(UserinfoOf("http://host/a@b"), "");
  EXPECT_EQ(UserinfoOf("http://@host/"), "");
}

TEST(RedactUserinfoInText, RedactsEveryUrlInAMessage) {
  EXPECT_EQ(RedactUserinfoInText("redirect from http://a:b@h1/x to "
                                 "'https://c:d@h2:8443/y?z=e@f' refused"),
            "redirect from http://***@h1/x to 'https://***@h2:8443/y?z=e@f' "
            "refused");
  EXPECT_EQ(RedactUserinfoInText("Location: http://u:p@[::1]/ (3 hops)"),
            "Location: http://***@[::1]/ (3 hops)");
  // A quote or bracket may be part of a password: the authority goes on.
  EXPECT_EQ(RedactUserinfoInText("to http://u:p'\")]@h"), "to http://***@h");
  EXPECT_EQ(RedactUserinfoInText("ends at http://u:p@h"),
            "ends at http://***@h");
}

TEST(RedactUserinfoInText, LeavesTextWithoutUrlCredentialsAlone) {
  for (const char* text :
       {"", "Could not resolve host: example.com", "mail me at a@b.example",
        "http://host/a@b and ftp://h?x@y", "://", "x://"}) {
    EXPECT_EQ(RedactUserinfoInText(text), text) << text;
  }
  EXPECT_EQ(RedactUserinfoInText("://@"), "://***@");  // empty userinfo
}

}  // namespace
}  // namespace batchfetch
