// open_regular_file: stat, then open non-blocking, then fstat the descriptor, so
// a path swapped for a FIFO between the two checks cannot block us either.
#include "core/regular_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace vgrad {
namespace {

const char* file_type_name(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a plain file";
}

}  // namespace

int open_regular_file(const std::string& path, const std::string& op) {
  const auto refuse = [&](const std::string& why) { throw Error(op + ": " + path + ": " + why); };
  struct stat info {};
  // stat before open: opening some devices has side effects (a tape rewinds).
  if (::stat(path.c_str(), &info) != 0) refuse(std::string("cannot open: ") + std::strerror(errno));
  if (!S_ISREG(info.st_mode)) refuse(std::string("not a regular file (") + file_type_name(info.st_mode) + ")");
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) refuse(std::string("cannot open: ") + std::strerror(errno));
  if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    ::close(fd);
    refuse(std::string("not a regular file (") + file_type_name(info.st_mode) + ")");
  }
  // Reads of regular files never block; clear the flag so no reader sees EAGAIN semantics.
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  return fd;
}

}  // namespace vgrad
