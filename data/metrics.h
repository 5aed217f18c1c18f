// Training output: per-epoch metrics to a CSV file (flushed each row, so a crash
// keeps what was written), and a progress line that redraws in place on a terminal
// and stays silent otherwise (a program then logs one plain line per epoch, as mnist_mlp does).
#pragma once
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

namespace vgrad::data {

class CsvLog {
 public:
  CsvLog(const std::string& path, std::vector<std::string> columns);  // writes the header
  ~CsvLog();
  CsvLog(const CsvLog&) = delete;
  CsvLog& operator=(const CsvLog&) = delete;
  void row(const std::vector<double>& values);  // one value per column

 private:
  std::string path_;
  std::vector<std::string> columns_;
  std::FILE* file_ = nullptr;
};

// "epoch 3 [#######.....] 412/938  1530 steps/s  loss 0.4123" on a terminal.
class Progress {
 public:
  Progress(std::string label, int64_t total);
  void update(int64_t done, double running_loss);  // cheap: redraws at most 10 times a second
  void finish();
  static bool is_terminal();

 private:
  std::string label_;
  int64_t total_;
  bool terminal_;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace vgrad::data
