// Opening an input file only when it is a regular file. A FIFO given as a
// checkpoint or data path would block the reader forever, and a directory or
// device yields nonsense; both are refused by type before any read.
#pragma once
#include <string>

namespace vgrad {

// Returns a read-only file descriptor for `path` (the caller closes it). Throws
// vgrad::Error "<op>: <path>: cannot open: <reason>" or
// "<op>: <path>: not a regular file (a FIFO)" (directory, character device, ...).
int open_regular_file(const std::string& path, const std::string& op);

}  // namespace vgrad
