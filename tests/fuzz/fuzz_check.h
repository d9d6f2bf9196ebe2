#ifndef BATCHFETCH_TESTS_FUZZ_FUZZ_CHECK_H_
#define BATCHFETCH_TESTS_FUZZ_FUZZ_CHECK_H_

// FUZZ_CHECK(condition, message): an invariant of a fuzz target. When it does
// not hold, prints where and why and aborts, which libFuzzer reports as a
// crash (and saves the input); the corpus replay driver fails the same way.

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(condition, message)                                    \
  do {                                                                    \
    if (!(condition)) {                                                   \
      std::fprintf(stderr, "%s:%d: invariant failed: %s: %s\n", __FILE__, \
                   __LINE__, #condition, message);                        \
      std::abort();                                                       \
    }                                                                     \
  } while (0)

#endif  // BATCHFETCH_TESTS_FUZZ_FUZZ_CHECK_H_
