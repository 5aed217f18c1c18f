// The bad-input corpus: every file make_corpus.py writes is loaded the way a
// user's program would and must be refused with a vgrad::Error that names the
// file, with no crash, no hang (a watchdog per file) and no large allocation
// (the address space is capped; not under ASan, which reserves terabytes).
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/safetensors.h"
#include "data/dataset.h"
#include "data/idx.h"
#include "nn/checkpoint.h"
#include "support.h"

namespace {

struct Case {
  std::string name, kind, fragment, named;  // as in make_corpus.py's manifest
};

std::vector<Case> read_manifest(const std::string& dir) {
  std::ifstream in(dir + "/manifest.tsv");
  std::vector<Case> cases;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> fields;
    std::stringstream row(line);
    for (std::string field; std::getline(row, field, '\t');) fields.push_back(field);
    fields.resize(4);
    cases.push_back({fields[0], fields[1], fields[2], fields[3]});
  }
  return cases;
}

void load_as(const std::string& kind, const std::string& path) {
  using namespace vgrad;
  if (kind == "safetensors") safetensors::load(path);
  else if (kind == "checkpoint") nn::load_tensors(path);
  else if (kind == "idx") data::read_idx(path);
  else if (kind == "idx-images") data::read_idx(path, data::kIdxMagicImages);
  else if (kind == "idx-labels") data::read_idx(path, data::kIdxMagicLabels);
  else if (kind == "mnist-train") data::Mnist(path, "train");
  else if (kind == "mnist-test") data::Mnist(path, "test");
  else ADD_FAILURE() << "manifest: unknown kind '" << kind << "'";
}

// The watchdog: a file that makes a reader block ends the process, naming it.
char current_case[512];
void on_timeout(int) {
  const char prefix[] = "corpus: timed out (a hang) on ";
  [[maybe_unused]] auto written = ::write(2, prefix, sizeof prefix - 1);
  written = ::write(2, current_case, std::strlen(current_case));
  written = ::write(2, "\n", 1);
  ::_exit(3);
}

TEST(Corpus, EveryBadFileIsRefusedNamingIt) {
  const char* dir = std::getenv("VGRAD_CORPUS_DIR");
  if (dir == nullptr) GTEST_SKIP() << "VGRAD_CORPUS_DIR is not set (CTest sets it after make_corpus.py ran)";
  const std::vector<Case> cases = read_manifest(dir);
  ASSERT_GE(cases.size(), 100u) << "manifest in " << dir << " is missing or short";

  std::signal(SIGALRM, on_timeout);
  const vgrad_test::AddressSpaceCap cap(uint64_t{512} << 20);
  if (cap.active()) {  // the guard itself holds: 1 GiB is out of reach
    void* volatile probe = std::malloc(size_t{1} << 30);
    EXPECT_EQ(probe, nullptr) << "the address-space cap does not stop a 1 GiB allocation";
    std::free(probe);
  }
  int refused = 0;
  for (const Case& c : cases) {
    const std::string path = std::string(dir) + "/" + c.name, named = std::string(dir) + "/" + c.named;
    std::snprintf(current_case, sizeof current_case, "%s", c.name.c_str());
    ::alarm(10);
    const std::string message = vgrad_test::error_of([&] { load_as(c.kind, path); });
    ::alarm(0);
    SCOPED_TRACE(c.name + " (" + c.kind + ")");
    EXPECT_CONTAINS(message, named);
    EXPECT_CONTAINS(message, c.fragment);
    EXPECT_LT(message.size(), 1000u) << message;  // excerpts, never a whole value
    refused += !message.empty();
  }
  std::printf("corpus: %d of %zu bad inputs refused (address space cap %s)\n", refused, cases.size(),
              cap.active() ? "on" : "off");
}

}  // namespace
