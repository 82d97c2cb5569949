// Unit tests of the thread pool and of the multi-threaded forward pass: every
// task runs exactly once, exceptions reach the caller, products and the whole
// forward pass give bit-identical results for every thread count, and
// workspaces with their own pools run side by side.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "vit/attention_map.hpp"
#include "vit/vit.hpp"

using vit::Index;
using vit::Matrix;

namespace {

const std::string tiny_dir = std::string(VIT_TEST_DATA_DIR) + "/timm_vit_tiny_p16_224";

auto load_tiny() {
  vit::LoadOptions o;
  o.config_path = tiny_dir + "/config.json";
  return vit::load_model<float>(tiny_dir + "/model.safetensors", o);
}

// The fixture's image, then batch - 1 noisy copies of it, one per row.
Matrix<float> fixture_batch(Index batch) {
  const auto ex = vit::io::SafeTensors::open(tiny_dir + "/expected.safetensors");
  const std::vector<float> px = ex.read<float>("pixel_values");
  const Index cols = Index(px.size());
  Matrix<float> images(batch, cols);
  images.row(0) = Eigen::Map<const Matrix<float>>(px.data(), 1, cols);
  std::srand(7);
  for (Index i = 1; i < batch; ++i)
    images.row(i) = images.row(0) + 0.5f * Matrix<float>::Random(1, cols);
  return images;
}

// Everything forward() returns, compared bit for bit.
void check_same(const vit::Output<float>& a, const vit::Output<float>& b) {
  CHECK(a.logits == b.logits);
  CHECK(a.pre_logits == b.pre_logits);
  CHECK(a.tokens == b.tokens);
  CHECK(a.embeddings == b.embeddings);
  REQUIRE(a.hidden_states.size() == b.hidden_states.size());
  for (std::size_t i = 0; i < a.hidden_states.size(); ++i)
    CHECK(a.hidden_states[i] == b.hidden_states[i]);
  REQUIRE(a.attention.size() == b.attention.size());
  for (std::size_t i = 0; i < a.attention.size(); ++i) CHECK(a.attention[i] == b.attention[i]);
}

vit::ForwardOptions with_threads(int threads, bool extras) {
  vit::ForwardOptions o;
  o.attention = extras;
  o.hidden_states = extras;
  o.threads = threads;
  return o;
}

}  // namespace

TEST_CASE("the pool runs every task exactly once, on a thread it names") {
  for (int threads = 1; threads <= 4; ++threads) {
    vit::ThreadPool pool(threads);
    CHECK(pool.threads() == threads);
    for (Index count : {Index(0), Index(1), Index(7), Index(1000)}) {
      CAPTURE(threads);
      CAPTURE(count);
      std::vector<std::atomic<int>> runs(static_cast<std::size_t>(count));
      for (auto& r : runs) r = 0;
      std::atomic<int> bad_thread{0};
      pool.run(count, [&](Index task, int thread) {
        ++runs[std::size_t(task)];
        if (thread < 0 || thread >= threads) ++bad_thread;
      });
      CHECK(bad_thread == 0);
      CHECK(
          std::all_of(runs.begin(), runs.end(), [](const std::atomic<int>& r) { return r == 1; }));
    }
    // Many short runs back to back: workers must never miss or repeat a job.
    std::atomic<long> sum{0};
    for (int rep = 0; rep < 300; ++rep)
      pool.run(5, [&](Index task, int) { sum += long(task) + 1; });
    CHECK(sum == 300L * 15);
  }
  CHECK_THROWS_AS(vit::ThreadPool(0), vit::argument_error);
}

TEST_CASE("a task's exception is rethrown in the caller, and the pool goes on working") {
  for (int threads = 1; threads <= 3; ++threads) {
    CAPTURE(threads);
    vit::ThreadPool pool(threads);
    for (Index count : {Index(1), Index(7), Index(1000)}) {
      bool caught = false;
      try {
        pool.run(count, [&](Index task, int) {
          if (task == count / 2) throw std::out_of_range("task " + std::to_string(task));
        });
      } catch (const std::out_of_range& e) {
        caught = std::string(e.what()) == "task " + std::to_string(count / 2);
      }
      CHECK(caught);
      std::atomic<int> done{0};
      pool.run(100, [&](Index, int) { ++done; });
      CHECK(done == 100);
    }
  }
}

TEST_CASE("run() inside a task runs inline, and runs from two threads take turns") {
  vit::ThreadPool pool(2);
  std::vector<std::atomic<int>> runs(40);
  for (auto& r : runs) r = 0;
  std::atomic<int> other_thread{0};
  pool.run(4, [&](Index outer, int thread) {
    pool.run(10, [&](Index inner, int inner_thread) {
      if (inner_thread != thread) ++other_thread;  // same thread, same per-thread memory
      ++runs[std::size_t(outer * 10 + inner)];
    });
  });
  CHECK(other_thread == 0);
  CHECK(std::all_of(runs.begin(), runs.end(), [](const std::atomic<int>& r) { return r == 1; }));

  std::atomic<long> sum{0};
  auto caller = [&] {
    for (int rep = 0; rep < 200; ++rep) pool.run(9, [&](Index task, int) { sum += long(task); });
  };
  std::thread other(caller);
  caller();
  other.join();
  CHECK(sum == 2L * 200 * 36);
}

TEST_CASE("products on several threads are bit-identical to one thread") {
  std::srand(3);
  struct Shape {
    Index m, n, k;
  };
  // Tiled shapes (batch-1 and batch-8 rows, column tails) and a one-tile one.
  for (Shape s : {Shape{197, 768, 192}, Shape{197, 577, 96}, Shape{600, 700, 64},
                  Shape{1100, 300, 40}, Shape{20, 30, 10}}) {
    CAPTURE(s.m);
    CAPTURE(s.n);
    const Matrix<float> a = Matrix<float>::Random(s.m, s.k);
    const Matrix<float> bt = Matrix<float>::Random(s.n, s.k);  // for a * bt^T
    const Matrix<float> b = bt.transpose();                    // for a * b
    const Matrix<float> c0 = Matrix<float>::Random(s.m, s.n);
    Matrix<float> nt1 = c0, nn1 = c0;
    vit::nn::GemmScratch<float> one;
    vit::nn::gemm_nt<float>(a, bt, nt1, one, 0.5f, true);
    vit::nn::gemm_nn<float>(a, b, nn1, one);
    const Matrix<float> expected_nt = c0 + 0.5f * a * bt.transpose();
    CHECK((nt1 - expected_nt).cwiseAbs().maxCoeff() < 1e-4f * float(s.k));
    CHECK((nn1 - a * b).cwiseAbs().maxCoeff() < 1e-4f * float(s.k));
    for (int threads = 2; threads <= 3; ++threads) {
      vit::ThreadPool pool(threads);
      std::vector<vit::nn::GemmScratch<float>> scratch(static_cast<std::size_t>(threads));
      const vit::nn::GemmContext<float> ctx(&pool, scratch.data());
      Matrix<float> nt = c0, nn = c0;
      vit::nn::gemm_nt<float>(a, bt, nt, ctx, 0.5f, true);
      vit::nn::gemm_nn<float>(a, b, nn, ctx);
      CHECK(nt == nt1);
      CHECK(nn == nn1);
    }
  }
}

TEST_CASE("forward with 2 and 3 threads equals 1 thread, attention maps included") {
  const auto loaded = load_tiny();
  const auto& model = loaded.model;
  const vit::Architecture& arch = model.architecture();
  for (Index batch : {Index(1), Index(3)}) {
    CAPTURE(batch);
    const Matrix<float> images = fixture_batch(batch);
    for (bool extras : {true, false}) {
      CAPTURE(extras);
      vit::Output<float> one;
      model.forward(images, one, with_threads(1, extras));
      for (int threads : {2, 3}) {
        CAPTURE(threads);
        vit::Output<float> many;
        model.forward(images, many, with_threads(threads, extras));
        check_same(one, many);
        if (!extras) continue;
        for (Index i = 0; i < batch; ++i) {
          const auto a = vit::attention_maps(one, arch, i);
          const auto b = vit::attention_maps(many, arch, i);
          CHECK(a.rollout == b.rollout);
          REQUIRE(a.cls_attention.size() == b.cls_attention.size());
          for (std::size_t l = 0; l < a.cls_attention.size(); ++l)
            CHECK(a.cls_attention[l] == b.cls_attention[l]);
        }
      }
    }
  }
}

TEST_CASE("one Output changes its thread count from call to call") {
  const auto loaded = load_tiny();
  const Matrix<float> images = fixture_batch(3);
  vit::Output<float> reference;
  loaded.model.forward(images, reference, with_threads(1, true));
  vit::Output<float> out;
  for (int threads : {2, 2, 3, 1, 2, 1}) {
    CAPTURE(threads);
    loaded.model.forward(images, out, with_threads(threads, true));
    check_same(reference, out);
  }
  // A copy starts without threads of its own and still runs.
  vit::Output<float> copy = out;
  loaded.model.forward(images, copy, with_threads(2, true));
  check_same(reference, copy);
  CHECK_THROWS_AS(loaded.model.forward(images, out, with_threads(0, false)), vit::argument_error);
}

TEST_CASE("two threads run forward at once, each with its own Output and pool") {
  const auto loaded = load_tiny();
  const Matrix<float> images = fixture_batch(3);
  vit::Output<float> reference;
  loaded.model.forward(images, reference, with_threads(1, true));
  std::atomic<int> mismatches{0};
  auto user = [&](int threads) {
    vit::Output<float> out;
    for (int rep = 0; rep < 4; ++rep) {
      loaded.model.forward(images, out, with_threads(threads, true));
      if (out.logits != reference.logits || out.attention.back() != reference.attention.back())
        ++mismatches;
    }
  };
  std::thread first(user, 2);
  std::thread second(user, 3);
  first.join();
  second.join();
  CHECK(mismatches == 0);
}
