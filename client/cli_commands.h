// The batchfetch CLI commands. Each takes the arguments after its command
// name, talks to the server, writes JSON lines to stdout and messages for
// people to stderr, and returns the process exit code (kExit* in
// client/cli_args.h). SIGPIPE must be ignored by the caller, so that a closed
// stdout ends a command with an error instead of killing the process.

#ifndef BATCHFETCH_CLIENT_CLI_COMMANDS_H_
#define BATCHFETCH_CLIENT_CLI_COMMANDS_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace batchfetch::cli {

// `batchfetch fetch`: sends one FetchBatch and prints each result as it
// arrives, with a progress bar and a closing summary on stderr unless --quiet
// (the bar only when stderr is a terminal). "-" reads URLs from std::cin; the
// default server comes from $BATCHFETCH_SERVER. Returns kExitOk when every
// result is OK and the batch ended DONE, kExitFailed when some result failed
// or the batch did not finish, kExitError on a usage, connection, RPC or
// stdout error, and kExitInterrupted after Ctrl-C (the call is cancelled and
// the results received so far stay printed).
int RunFetch(const std::vector<std::string>& args);

// `batchfetch get`: prints the batch summary line and, with --results, every
// stored result in index order. Returns kExitOk when the batch exists,
// kExitFailed when it does not, kExitError otherwise.
int RunGet(const std::vector<std::string>& args);

// `batchfetch watch ID`: prints each result as WatchBatch sends it (stored
// ones first, then live ones), then a {"summary":{...}} line. Exit codes as
// RunFetch (kExitFailed also for an unknown batch).
int RunWatch(const std::vector<std::string>& args);

// `batchfetch cancel ID`: CancelBatch, then prints the batch's summary line
// as the server answered it (usually still running; `watch` shows the end).
// kExitFailed for an unknown batch.
int RunCancel(const std::vector<std::string>& args);

// `batchfetch list`: prints one summary line per batch, newest first,
// paging through ListBatches (--state filters, --limit stops early).
int RunList(const std::vector<std::string>& args);

// Prints "batchfetch: <message>" and a hint to run --help on stderr and
// returns kExitError.
int UsageError(const absl::Status& status);

}  // namespace batchfetch::cli

#endif  // BATCHFETCH_CLIENT_CLI_COMMANDS_H_
