// batchfetch: command-line client for the BatchFetcher gRPC service.
//
//   batchfetch fetch [flags] URL... | -f FILE | -
//   batchfetch get ID [flags] [--results]
//
// stdout carries only machine-readable JSON lines (one per result, plus an
// optional summary line); everything meant for people (progress bar, summary,
// errors) goes to stderr. Run `batchfetch --help` for the full syntax.

#include <signal.h>

#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "client/cli_args.h"
#include "client/cli_commands.h"

int main(int argc, char** argv) {
  namespace cli = ::batchfetch::cli;
  // Writes to a closed pipe should fail with EPIPE (handled, and the RPC
  // cancelled) instead of killing the process mid-stream.
  signal(SIGPIPE, SIG_IGN);

  if (argc < 2) {
    std::fputs(cli::kUsage, stderr);
    return cli::kExitError;
  }
  const std::string command = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  if (command == "help" || command == "--help" || command == "-h") {
    std::fputs(cli::kUsage, stdout);
    return cli::kExitOk;
  }
  if (command == "fetch") return cli::RunFetch(args);
  if (command == "get") return cli::RunGet(args);
  if (command == "watch") return cli::RunWatch(args);
  if (command == "cancel") return cli::RunCancel(args);
  if (command == "list") return cli::RunList(args);
  return cli::UsageError(absl::InvalidArgumentError(
      absl::StrCat("unknown command '", command, "'")));
}
