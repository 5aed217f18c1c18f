// CSV metrics and the terminal progress line.
#include "data/metrics.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace vgrad::data {

CsvLog::CsvLog(const std::string& path, std::vector<std::string> columns) : path_(path), columns_(std::move(columns)) {
  file_ = std::fopen(path.c_str(), "w");
  if (!file_) fail("metrics: cannot write {}: {}", path, std::strerror(errno));
  std::fprintf(file_, "%s\n", fmt::format("{}", fmt::join(columns_, ",")).c_str());
  std::fflush(file_);
}

CsvLog::~CsvLog() {
  if (file_) std::fclose(file_);
}

void CsvLog::row(const std::vector<double>& values) {
  if (values.size() != columns_.size())
    fail("metrics: {}: {} values for {} columns", path_, values.size(), columns_.size());
  std::fprintf(file_, "%s\n", fmt::format("{}", fmt::join(values, ",")).c_str());
  if (std::fflush(file_) != 0) fail("metrics: cannot write {}: {}", path_, std::strerror(errno));
}

bool Progress::is_terminal() { return isatty(STDOUT_FILENO) == 1; }

Progress::Progress(std::string label, int64_t total)
    : label_(std::move(label)), total_(total), terminal_(is_terminal()), start_(std::chrono::steady_clock::now()) {}

void Progress::update(int64_t done, double running_loss) {
  if (!terminal_) return;
  const auto now = std::chrono::steady_clock::now();
  if (done < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  const double seconds = std::chrono::duration<double>(now - start_).count();
  const int width = 24, filled = total_ > 0 ? int(width * done / total_) : width;
  std::printf("\r%s [%s%s] %lld/%lld  %.0f steps/s  loss %.4f", label_.c_str(), std::string(filled, '#').c_str(),
              std::string(width - filled, '.').c_str(), static_cast<long long>(done), static_cast<long long>(total_),
              seconds > 0 ? double(done) / seconds : 0.0, running_loss);
  std::fflush(stdout);
}

void Progress::finish() {
  if (terminal_) std::printf("\r\033[K");
}

}  // namespace vgrad::data
