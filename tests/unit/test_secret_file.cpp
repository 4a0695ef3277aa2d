// The token-file reader that tunneld, tunnelctl and localproxy share.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <doctest/doctest.h>
#include <iterator>
#include <string>
#include <vector>

#include "secret_file.h"
#include "secret_input.h"
#include "temp_dir.h"

using tunnel::read_token_file;
using tunnel::TokenFileProblem;
using tunnel::TokenFileRules;

namespace {

constexpr TokenFileRules kWholeRegularFile{.max_size = 64};
constexpr TokenFileRules kFirstLineAnyFile{
    .max_size = 64, .regular_file_only = false, .first_line_only = true};

}  // namespace

TEST_SUITE("secret_file") {
  TEST_CASE("a private file's token, trimmed") {
    test_support::TempDir dir;
    const auto f = read_token_file(dir.write("t", "  tok-en_1\r\n"), kWholeRegularFile);
    CHECK(f.problem == TokenFileProblem::none);
    CHECK(f.token == "tok-en_1");
  }

  TEST_CASE("a file that group or others may access is refused with its mode") {
    test_support::TempDir dir;
    for (const mode_t mode : {0640, 0604, 0620, 0602}) {
      CAPTURE(mode);
      const auto f = read_token_file(dir.write("t", "token\n", mode), kWholeRegularFile);
      CHECK(f.problem == TokenFileProblem::too_open);
      CHECK(tunnel::octal_mode(f.mode) == tunnel::octal_mode(mode));
      CHECK(f.token.empty());
    }
  }

  TEST_CASE("the whole file or its first line, as the caller says") {
    test_support::TempDir dir;
    const std::string two = dir.write("two", "one\ntwo\n");
    CHECK(read_token_file(two, kWholeRegularFile).problem == TokenFileProblem::not_header_safe);
    const auto first = read_token_file(two, kFirstLineAnyFile);
    CHECK(first.problem == TokenFileProblem::none);
    CHECK(first.token == "one");
    CHECK(read_token_file(dir.write("blank", "\nsecond\n"), kFirstLineAnyFile).problem ==
          TokenFileProblem::empty);
    CHECK(read_token_file(dir.write("space", "a b\n"), kFirstLineAnyFile).problem ==
          TokenFileProblem::not_header_safe);
  }

  TEST_CASE("size, kind and absence") {
    test_support::TempDir dir;
    const auto big = read_token_file(dir.write("big", std::string(65, 'a')), kWholeRegularFile);
    CHECK(big.problem == TokenFileProblem::too_large);
    CHECK(big.size == 65);
    CHECK(read_token_file(dir.path(), kFirstLineAnyFile).problem == TokenFileProblem::is_directory);
    const auto missing = read_token_file(dir / "missing", kWholeRegularFile);
    CHECK(missing.problem == TokenFileProblem::cannot_open);
    CHECK(missing.error_number == ENOENT);
  }

  TEST_CASE("a pipe where the caller allows one (tunnelctl --access-token-file <(...))") {
    test_support::TempDir dir;
    const std::string fifo = dir / "fifo";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    const pid_t writer = ::fork();
    REQUIRE(writer >= 0);
    if (writer == 0) {
      const int fd = ::open(fifo.c_str(), O_WRONLY);
      const std::string line = "fifo-token\n" + std::string(200, 'x');
      (void)::write(fd, line.data(), line.size());
      ::_exit(0);
    }
    const auto f = read_token_file(
        fifo, {.max_size = 1024, .regular_file_only = false, .first_line_only = true});
    CHECK(f.problem == TokenFileProblem::none);
    CHECK(f.token == "fifo-token");
    int status = 0;
    ::waitpid(writer, &status, 0);
    CHECK(WIFEXITED(status));
  }
}

// The command lines' side of secrets (ctl/common/secret_input.h).
TEST_SUITE("secret_input") {
  TEST_CASE("secret values are found in every spelling, and redacted") {
    const char* argv[] = {"prog",
                          "-i",
                          "AAAA1",
                          "-iBBBB2",
                          "-i=CCCC3",
                          "--client-token",
                          "DDDD4",
                          "--client-token=EEEE5",
                          "--https-proxy",
                          "http://u:p@h",
                          "-s",
                          "5000"};
    const auto secrets = tunnel::cli::secrets_on_argv(
        static_cast<int>(std::size(argv)), argv, {{"-i", "client-token"}, {"", "https-proxy"}});
    CHECK(secrets ==
          std::vector<std::string>{"AAAA1", "BBBB2", "CCCC3", "DDDD4", "EEEE5", "http://u:p@h"});
    CHECK(tunnel::cli::redact("bad AAAA1\nor http://u:p@h\r; abc",
                              {"AAAA1", "http://u:p@h", "abc"}) ==
          "bad <redacted> or <redacted> ; abc");
  }
}
