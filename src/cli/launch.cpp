// `shrink train RECIPE --nproc N`: starts N worker processes of this same program on this machine,
// with torchrun's variables set, and supervises them.
#include <fmt/format.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "cli_common.h"
#include "shrink/core/error.h"

namespace shrink::cli {

namespace {

volatile sig_atomic_t g_forward_signal = 0;

extern "C" void remember_signal(int sig) { g_forward_signal = sig; }

/// A TCP port nobody listens on now (the kernel's choice); rank 0's store binds it next.
int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw UserError("--nproc: cannot open a socket to find a free port");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(fd);
    throw UserError("--nproc: cannot bind a loopback port");
  }
  const int port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

std::string describe(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return fmt::format("was killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  return "stopped";
}

}  // namespace

int launch_local_workers(int64_t nproc, char** argv) {
  const int port = free_port();
  // Ctrl-C reaches only this process (the workers get their own process groups) and is passed
  // on once: a second SIGINT at a worker would kill it before it writes its checkpoint.
  struct sigaction sa {};
  sa.sa_handler = remember_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: waitpid returns to forward the signal
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  std::vector<pid_t> pids(nproc, -1);
  for (int64_t r = 0; r < nproc; ++r) {
    pid_t pid = fork();
    if (pid < 0) throw UserError(fmt::format("--nproc: cannot start worker {}: {}", r, std::strerror(errno)));
    if (pid == 0) {
      setpgid(0, 0);
      signal(SIGINT, SIG_DFL);
      signal(SIGTERM, SIG_DFL);
      setenv("RANK", std::to_string(r).c_str(), 1);
      setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      setenv("WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      setenv("LOCAL_WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      setenv("MASTER_ADDR", "127.0.0.1", 1);
      setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      execv("/proc/self/exe", argv);
      std::fprintf(stderr, "error: --nproc: cannot run %s: %s\n", argv[0], std::strerror(errno));
      _exit(127);
    }
    pids[r] = pid;
  }

  auto rank_of = [&](pid_t pid) {
    for (int64_t r = 0; r < nproc; ++r)
      if (pids[r] == pid) return r;
    return int64_t{-1};
  };
  int64_t running = nproc, failed_rank = -1;
  int failed_status = 0, exit_code = 0;
  std::chrono::steady_clock::time_point kill_at;
  std::vector<int64_t> hung;  // ranks that had to be killed: the likely cause of a timeout
  while (running > 0) {
    if (g_forward_signal) {
      for (auto pid : pids)
        if (pid > 0) kill(pid, g_forward_signal);
      g_forward_signal = 0;
    }
    int status = 0;
    // Polls while a failed rank's peers get a few seconds to stop by themselves (Gloo sees the
    // closed connection); blocks otherwise.
    pid_t pid = waitpid(-1, &status, failed_rank >= 0 ? WNOHANG : 0);
    if (pid == 0) {
      if (std::chrono::steady_clock::now() >= kill_at)
        for (int64_t k = 0; k < nproc; ++k)
          if (pids[k] > 0 && std::find(hung.begin(), hung.end(), k) == hung.end()) {
            kill(pids[k], SIGKILL);
            hung.push_back(k);
          }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    if (pid < 0) {
      if (errno == EINTR) continue;
      break;
    }
    const int64_t r = rank_of(pid);
    if (r < 0) continue;
    pids[r] = -1;
    --running;
    const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 130 && failed_rank < 0) exit_code = 130;  // interrupted
    if (!ok && !(WIFEXITED(status) && WEXITSTATUS(status) == 130) && failed_rank < 0) {
      failed_rank = r;
      failed_status = status;
      kill_at = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      for (auto p : pids)
        if (p > 0) kill(p, SIGTERM);
    }
  }
  if (failed_rank >= 0) {
    std::string also;
    for (auto k : hung) also += fmt::format("; rank {} did not stop within 5 s and was killed (hung?)", k);
    std::fprintf(stderr, "error: rank %lld of %lld %s; the other ranks were stopped%s\n",
                 static_cast<long long>(failed_rank), static_cast<long long>(nproc), describe(failed_status).c_str(),
                 also.c_str());
    return WIFEXITED(failed_status) ? WEXITSTATUS(failed_status) : 1;
  }
  return exit_code;
}

}  // namespace shrink::cli
