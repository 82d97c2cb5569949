// One model shared by many threads: 8 threads call forward() on the same
// const model at once, each with its own Output, in different orders, batch
// sizes and thread counts, and every result must equal, bit for bit, what a
// single thread computed for the same batch beforehand. Run for packed fp32
// (as load_model packs on AVX-512 CPUs, plain weights elsewhere), bf16 and
// int8, whichever kernels this CPU runs (reported with MESSAGE).
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "vit/vit.hpp"

using vit::Index;
using vit::Matrix;

namespace {

using Model = vit::VisionTransformer<vit::DynamicConfig<float>>;

// Small, but with products large enough (m n k > 2^22 at batch 8) that two
// threads split the linear layers into tiles, not only the attention heads.
vit::Architecture small_architecture() {
  vit::Architecture a;
  a.image_size = 32;
  a.patch_size = 4;  // 64 patches + class token
  a.embed_dim = 64;
  a.depth = 2;
  a.num_heads = 4;
  a.mlp_hidden = 128;
  a.num_classes = 10;
  return a;
}

// Random weights of a useful size: every bias, norm and token matters.
Model random_model(unsigned seed) {
  Model m(small_architecture());
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const auto& p : m.named_parameters()) {
    std::size_t n = 1;
    for (auto d : p.shape) n *= std::size_t(d);
    const bool norm_gain = p.name.find("norm") != std::string::npos &&
                           p.name.compare(p.name.size() - 7, 7, ".weight") == 0;
    for (std::size_t i = 0; i < n; ++i)
      p.data[i] = norm_gain ? 1.0f + 0.1f * normal(rng) : 0.1f * normal(rng);
  }
  m.update_position_table();
  return m;
}

Matrix<float> random_images(Index count, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const vit::Architecture a = small_architecture();
  Matrix<float> images(count, Index(a.in_chans) * a.image_size * a.image_size);
  for (Index i = 0; i < images.size(); ++i) images.data()[i] = normal(rng);
  return images;
}

// One forward call: these images (rows of the image matrix), as one batch.
struct Job {
  std::vector<Index> rows;
  Matrix<float> batch;
  Matrix<float> logits, pre_logits;  // the single-threaded reference
};

// The images cut into consecutive batches of `size` (the last may be smaller).
std::vector<Job> make_jobs(const Matrix<float>& images, Index size) {
  std::vector<Job> jobs;
  for (Index first = 0; first < images.rows(); first += size) {
    Job j;
    for (Index r = first; r < std::min(images.rows(), first + size); ++r) j.rows.push_back(r);
    j.batch.resize(Index(j.rows.size()), images.cols());
    for (std::size_t i = 0; i < j.rows.size(); ++i) j.batch.row(Index(i)) = images.row(j.rows[i]);
    jobs.push_back(std::move(j));
  }
  return jobs;
}

// What one of the concurrent threads does: jobs of the given batch sizes,
// each round in a new order of its own; threads = 0 alternates 1 and 2.
struct Plan {
  std::vector<Index> batch_sizes;
  int threads;
};

// Fills the references of every job single-threaded, then runs the plans on
// concurrent threads sharing `model`; returns the number of mismatches,
// describes the first in `first_mismatch` and counts the calls in `calls`.
int run_concurrently(const Model& model, const Matrix<float>& images,
                     const std::vector<Plan>& plans, int rounds, std::string& first_mismatch,
                     int& calls) {
  std::vector<Index> sizes;
  for (const Plan& p : plans)
    for (Index s : p.batch_sizes)
      if (std::find(sizes.begin(), sizes.end(), s) == sizes.end()) sizes.push_back(s);
  std::vector<std::vector<Job>> jobs(sizes.size());  // by position in `sizes`
  for (std::size_t s = 0; s < sizes.size(); ++s) {
    jobs[s] = make_jobs(images, sizes[s]);
    for (Job& j : jobs[s]) {
      vit::Output<float> out;  // fresh: nothing carried over from other calls
      model.forward(j.batch, out);
      j.logits = out.logits;
      j.pre_logits = out.pre_logits;
    }
  }

  std::atomic<int> mismatches{0}, waiting{int(plans.size())}, count{0};
  std::mutex mutex;
  std::vector<std::exception_ptr> errors(plans.size());
  auto worker = [&](std::size_t t) {
    try {
      const Plan& plan = plans[t];
      std::vector<const Job*> mine;
      for (Index s : plan.batch_sizes) {
        const auto k = std::size_t(std::find(sizes.begin(), sizes.end(), s) - sizes.begin());
        for (const Job& j : jobs[k]) mine.push_back(&j);
      }
      std::mt19937 rng(unsigned(1000 + t));
      vit::Output<float> out;  // this thread's, reused across calls and batch sizes
      vit::ForwardOptions options;
      // Start together, so that the calls overlap from the first one.
      --waiting;
      while (waiting > 0) std::this_thread::yield();
      int call = 0;
      for (int round = 0; round < rounds; ++round) {
        std::shuffle(mine.begin(), mine.end(), rng);
        for (const Job* j : mine) {
          options.threads = plan.threads > 0 ? plan.threads : 1 + call % 2;
          ++call;
          model.forward(j->batch, out, options);
          ++count;
          if (out.logits == j->logits && out.pre_logits == j->pre_logits) continue;
          if (mismatches++ == 0) {
            std::ostringstream s;
            s << "thread " << t << ", round " << round << ", batch of " << j->rows.size()
              << " from image " << j->rows.front() << ", " << options.threads
              << " thread(s): max |logit difference| "
              << (out.logits - j->logits).cwiseAbs().maxCoeff();
            const std::lock_guard<std::mutex> lock(mutex);
            first_mismatch = s.str();
          }
        }
      }
    } catch (...) {
      errors[t] = std::current_exception();
      waiting = 0;
    }
  };
  std::vector<std::thread> pool;
  for (std::size_t t = 0; t < plans.size(); ++t) pool.emplace_back(worker, t);
  for (std::thread& t : pool) t.join();
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
  calls = count;
  return mismatches;
}

// 8 threads: single images, batches of 3 and 8, and a mix, some with two
// threads of their own per call.
const std::vector<Plan> plans = {
    {{1}, 1}, {{1}, 2}, {{1}, 1}, {{1}, 2}, {{3}, 1}, {{3}, 2}, {{8}, 2}, {{1, 3, 8}, 0},
};

void check_shared_model(const std::string& precision, const Model& model,
                        const Matrix<float>& images) {
  std::string first;
  int calls = 0;
  const int mismatches = run_concurrently(model, images, plans, 6, first, calls);
  INFO("first mismatch: " << first);
  CHECK(mismatches == 0);
  CHECK(calls > 1000);
  MESSAGE(precision << ": " << calls << " concurrent forward calls, " << mismatches
                    << " mismatch(es)");

  // For the record, not required: does a batch give each image the bits it
  // gets alone? (The comparisons above are per batch composition.)
  bool same = true;
  vit::Output<float> one, eight;
  for (Index first_row = 0; first_row + 8 <= images.rows(); first_row += 8) {
    model.forward(images.middleRows(first_row, 8), eight);
    for (Index i = 0; i < 8; ++i) {
      model.forward(images.row(first_row + i), one);
      same = same && one.logits.row(0) == eight.logits.row(i);
    }
  }
  MESSAGE(precision << ": a batch of 8 gives each image "
                    << std::string(same ? "the same bits as" : "other bits than")
                    << " a call of its own");
}

}  // namespace

TEST_CASE("8 threads share one const model: every result equals the single-threaded one") {
  const Matrix<float> images = random_images(64, 7);
  Model model = random_model(42);

  SUBCASE("fp32") {
    // As load_model does: packed where the AVX-512 kernel runs, plain elsewhere.
    if (vit::nn::gemm_packed_uses_avx512()) model.pack_weights(vit::Precision::fp32);
    MESSAGE("fp32: " << std::string(model.weights_packed() ? "packed weights, AVX-512 kernel"
                                                           : "plain weights, portable GEMM"));
    check_shared_model("fp32", model, images);
  }
  SUBCASE("bf16") {
    // bf16 and int8 always pack; without the CPU instructions a portable
    // kernel runs the same arithmetic.
    model.pack_weights(vit::Precision::bf16);
    MESSAGE("bf16: " << std::string(vit::nn::gemm_packed_bf16_uses_avx512bf16()
                                        ? "AVX512-BF16 kernel"
                                        : "portable kernel"));
    CHECK(model.precision() == vit::Precision::bf16);
    check_shared_model("bf16", model, images);
  }
  SUBCASE("int8") {
    model.pack_weights(vit::Precision::int8);
    MESSAGE("int8: " << std::string(vit::nn::gemm_packed_int8_uses_avx512vnni()
                                        ? "AVX512-VNNI kernel"
                                        : "portable kernel"));
    CHECK(model.precision() == vit::Precision::int8);
    check_shared_model("int8", model, images);
  }
}
