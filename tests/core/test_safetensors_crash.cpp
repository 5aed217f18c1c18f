// Crash safety of safetensors::save: a child process saves a large checkpoint
// over and over and is SIGKILLed at random moments. After every kill the file on
// disk must load whole (one complete generation, never a mix), and the killed
// saves' temporaries must not pile up. Not a power-cut test: the page cache survives.
#include <gtest/gtest.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <thread>

#include "core/safetensors.h"
#include "support.h"

namespace {

namespace fs = std::filesystem;
namespace st = vgrad::safetensors;

constexpr int kTensors = 4;
constexpr int64_t kFloatsPerTensor = int64_t{1} << 20;  // 4 MB each, 16 MB a checkpoint

// Every float of generation g is g, and the metadata says g: a file mixing two
// generations, or cut short, cannot pass check_generation.
std::map<std::string, st::Entry> generation_tensors(int64_t generation) {
  std::map<std::string, st::Entry> tensors;
  for (int t = 0; t < kTensors; ++t) {
    st::Entry entry{"F32", {kFloatsPerTensor}, std::vector<uint8_t>(kFloatsPerTensor * sizeof(float))};
    const float value = static_cast<float>(generation);
    for (int64_t i = 0; i < kFloatsPerTensor; ++i) std::memcpy(entry.bytes.data() + i * sizeof(float), &value, sizeof value);
    tensors.emplace("layer" + std::to_string(t) + ".weight", std::move(entry));
  }
  return tensors;
}

int64_t check_generation(const std::string& path) {
  const st::File file = st::load(path);
  const int64_t generation = std::stoll(file.metadata.at("generation"));
  EXPECT_EQ(file.tensors.size(), size_t(kTensors));
  const float value = static_cast<float>(generation);
  for (const auto& [name, entry] : file.tensors) {
    EXPECT_EQ(entry.bytes.size(), size_t(kFloatsPerTensor * sizeof(float))) << name;
    for (size_t at = 0; at < entry.bytes.size(); at += sizeof(float))
      if (std::memcmp(entry.bytes.data() + at, &value, sizeof value) != 0) {
        ADD_FAILURE() << name << " byte " << at << " is not from generation " << generation;
        break;
      }
  }
  return generation;
}

class SafetensorsCrash : public vgrad_test::TempDirTest {};

TEST_F(SafetensorsCrash, KilledSavesNeverBreakTheCheckpointNorPileUpTemporaries) {
  const std::string checkpoint = path("model.safetensors");
  st::save(checkpoint, generation_tensors(0), {{"generation", "0"}});
  std::mt19937 random(12345);
  std::uniform_int_distribution<int> delay_ms(5, 120);
  // Kill until enough kills landed mid-save (a temporary on disk) and some save finished
  // before its kill: how many kills that takes depends on the machine's load (and on the
  // sanitizers), so their count is not fixed, only capped.
  constexpr int kKillsMidSave = 10, kMaxKills = 300;
  int kills_with_a_temporary = 0, kills = 0;
  int64_t last_generation = 0;
  for (int kill = 0; kill < kMaxKills && (kills_with_a_temporary < kKillsMidSave || last_generation == 0); ++kill) {
    ++kills;
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a crashed test
      try {
        for (int64_t generation = (kill + 1) * 1000;; ++generation)
          st::save(checkpoint, generation_tensors(generation), {{"generation", std::to_string(generation)}});
      } catch (...) {
        ::_exit(2);
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(random)));
    ::kill(child, SIGKILL);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the saving child stopped by itself (status " << status << ")";

    last_generation = check_generation(checkpoint);
    // At most the killed child's own temporary: the next save clears it.
    int temporaries = 0;
    for (const auto& item : fs::directory_iterator(dir_))
      if (item.path().filename() != "model.safetensors") ++temporaries;
    ASSERT_LE(temporaries, 1) << "after kill " << kill;
    kills_with_a_temporary += temporaries;
  }
  // The kills must land mid-save, or this test proves nothing.
  EXPECT_GE(kills_with_a_temporary, kKillsMidSave) << "of " << kills << " kills";
  EXPECT_GT(last_generation, 0);
  st::save(checkpoint, generation_tensors(1), {{"generation", "1"}});
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
  EXPECT_EQ(check_generation(checkpoint), 1);
  std::printf("crash safety: %d SIGKILLs, %d during a save, last generation on disk %lld\n", kills,
              kills_with_a_temporary, static_cast<long long>(last_generation));
}

}  // namespace
