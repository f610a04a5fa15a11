#pragma once
// Per-epoch progress: a bar redrawn in place on a terminal, nothing otherwise.
#include <chrono>
#include <cstdio>
#include <string>

namespace shrink::detail {

class ProgressBar {
 public:
  explicit ProgressBar(bool enabled) : enabled_(enabled) {}

  void start(int64_t epoch, int64_t epochs, int64_t total_steps) {
    epoch_ = epoch;
    epochs_ = epochs;
    total_ = total_steps;
    begin_ = last_draw_ = std::chrono::steady_clock::now();
  }

  void update(int64_t done, double loss, double accuracy, double images_per_sec) {
    if (!enabled_) return;
    auto now = std::chrono::steady_clock::now();
    if (done < total_ && now - last_draw_ < std::chrono::milliseconds(200)) return;
    last_draw_ = now;
    const int width = 24;
    int filled = total_ > 0 ? static_cast<int>(width * done / total_) : width;
    std::string bar(filled, '#');
    bar.resize(width, '.');
    double elapsed = std::chrono::duration<double>(now - begin_).count();
    double eta = done > 0 ? elapsed * (total_ - done) / done : 0;
    std::fprintf(stderr, "\r\033[Kepoch %lld/%lld [%s] %3d%% loss %.4f acc %.2f%% %.0f img/s ETA %s",
                 static_cast<long long>(epoch_), static_cast<long long>(epochs_), bar.c_str(),
                 total_ > 0 ? static_cast<int>(100 * done / total_) : 100, loss, accuracy, images_per_sec,
                 format_seconds(eta).c_str());
    std::fflush(stderr);
  }

  void finish() {
    if (!enabled_) return;
    std::fprintf(stderr, "\r\033[K");
    std::fflush(stderr);
  }

  static std::string format_seconds(double s) {
    long total = static_cast<long>(s + 0.5);
    char buf[32];
    std::snprintf(buf, sizeof buf, "%ld:%02ld", total / 60, total % 60);
    return buf;
  }

 private:
  bool enabled_;
  int64_t epoch_ = 0, epochs_ = 0, total_ = 0;
  std::chrono::steady_clock::time_point begin_, last_draw_;
};

}  // namespace shrink::detail
