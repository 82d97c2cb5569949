// The forward pass allocates no heap memory once its Output (workspace) has
// seen the batch size and thread count. Checked two ways: Eigen's
// EIGEN_RUNTIME_NO_MALLOC guard (made to throw here instead of asserting, so
// it also works with NDEBUG), and a global operator new that counts every C++
// allocation, on every thread (the pool's workers included).
#include <atomic>
#include <cstdlib>
#include <new>
#include <stdexcept>

#define EIGEN_RUNTIME_NO_MALLOC
#define eigen_assert(x) \
  if (!(x)) throw std::logic_error("Eigen assertion failed: " #x)

#include <doctest/doctest.h>

#include "vit/train/optimizer.hpp"
#include "vit/vit.hpp"

namespace {
std::atomic<long> allocations{0};
}

// The replacements below pair malloc with free, which GCC cannot see through
// when it inlines them into a new/delete pair.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

void* operator new(std::size_t n) {
  ++allocations;
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace {

// Runs forward twice; the second call must not allocate.
template <class Config>
long allocations_of_second_forward(const vit::VisionTransformer<Config>& model, Eigen::Index batch,
                                   vit::ForwardOptions options) {
  using Scalar = typename Config::Scalar;
  const int s = model.architecture().image_size;
  const vit::Matrix<Scalar> images = vit::Matrix<Scalar>::Random(batch, 3 * s * s);
  vit::Output<Scalar> out;
  model.forward(images, out, options);  // sizes the workspace
  const long before = allocations.load();
  Eigen::internal::set_is_malloc_allowed(false);
  try {
    model.forward(images, out, options);
  } catch (...) {
    Eigen::internal::set_is_malloc_allowed(true);
    throw;
  }
  Eigen::internal::set_is_malloc_allowed(true);
  CHECK(out.logits.allFinite());
  return allocations.load() - before;
}

}  // namespace

TEST_CASE("the guard works: an Eigen allocation in the forbidden region throws") {
  Eigen::internal::set_is_malloc_allowed(false);
  bool threw = false;
  try {
    vit::Matrix<float> m(100, 100);
    m.setZero();
  } catch (const std::logic_error&) {
    threw = true;
  }
  Eigen::internal::set_is_malloc_allowed(true);
  CHECK(threw);
  // Eigen's operator* at ViT-B's qkv shape allocates its packing buffers, which is
  // why products go through vit::nn::gemm with caller-owned scratch.
  const vit::Matrix<float> x = vit::Matrix<float>::Random(197, 768);
  const vit::Matrix<float> w = vit::Matrix<float>::Random(2304, 768);
  vit::Matrix<float> y(197, 2304);
  Eigen::internal::set_is_malloc_allowed(false);
  threw = false;
  try {
    y.noalias() = x * w.transpose();
  } catch (const std::logic_error&) {
    threw = true;
  }
  Eigen::internal::set_is_malloc_allowed(true);
  CHECK(threw);
  const long before = allocations.load();
  int* volatile p = new int(3);
  delete p;
  CHECK(allocations.load() - before == 1);
}

TEST_CASE("ViT-B/16 forward at batch 1 allocates nothing once its workspace exists") {
  // Full-size shapes: Eigen's own product would allocate its packing buffers here.
  vit::VisionTransformer<vit::presets::vit_base_patch16_224<float>> model;
  CHECK(allocations_of_second_forward(model, 1, {}) == 0);
}

TEST_CASE("small model, batch 3, with attention maps and hidden states, float and double") {
  vit::Architecture a = vit::preset_architecture("deit_tiny_distilled_patch16_224");
  a.depth = 2;
  a.image_size = 64;
  a.pos_embed_grid = 14;  // resampled table
  vit::VisionTransformer<vit::DynamicConfig<float>> f(a);
  CHECK(allocations_of_second_forward(f, 3, {true, true}) == 0);
  a.dist_token = false;
  a.pooling = vit::Pooling::avg;
  a.final_norm = false;
  a.fc_norm = true;
  vit::VisionTransformer<vit::DynamicConfig<double>> d(a);
  CHECK(allocations_of_second_forward(d, 3, {true, true}) == 0);
}

TEST_CASE("with 2 threads the forward pass allocates nothing once warm, on any thread") {
  vit::VisionTransformer<vit::presets::vit_base_patch16_224<float>> model;
  vit::ForwardOptions two;
  two.threads = 2;
  CHECK(allocations_of_second_forward(model, 1, two) == 0);
  two.attention = two.hidden_states = true;
  vit::Architecture a = vit::preset_architecture("deit_tiny_distilled_patch16_224");
  a.depth = 2;
  vit::VisionTransformer<vit::DynamicConfig<double>> d(a);
  CHECK(allocations_of_second_forward(d, 3, two) == 0);
  two.threads = 3;
  CHECK(allocations_of_second_forward(d, 2, two) == 0);
}

TEST_CASE("every thread's scratch is sized up front, whichever tasks it ran") {
  // Which pool thread picks up which task changes from call to call, so a
  // thread that ran only small tasks in the first call may run the largest in
  // the next: the workspace must not depend on who ran what.
  vit::Architecture a = vit::preset_architecture("deit_tiny_distilled_patch16_224");
  a.depth = 1;
  vit::VisionTransformer<vit::DynamicConfig<double>> d(a);
  vit::VisionTransformer<vit::DynamicConfig<float>> f(a);
  f.pack_weights();
  vit::ForwardOptions three;
  three.threads = 3;
  auto check = [&](const auto& model) {
    using Scalar = typename std::decay_t<decltype(model)>::Scalar;
    vit::Output<Scalar> out;
    model.forward(vit::Matrix<Scalar>::Random(2, 3 * 224 * 224), out, three);
    const auto& gemm = out.workspace.gemm;
    REQUIRE(gemm.size() == 3);
    CHECK(gemm[0].capacity() > 0);
    for (const auto& g : gemm) CHECK(g.capacity() == gemm[0].capacity());
    const auto& scores = out.workspace.block.attn.scores;
    REQUIRE(scores.size() == 3);
    for (const auto& s : scores) CHECK(s.rows() >= a.num_tokens());
  };
  check(d);
  check(f);
}

TEST_CASE("packed weights (fast kernels): batch 1 and 2, 1 and 2 threads, allocate nothing") {
  vit::VisionTransformer<vit::presets::vit_base_patch16_224<float>> model;
  model.pack_weights();
  REQUIRE(model.weights_packed());
  vit::ForwardOptions two;
  two.threads = 2;
  CHECK(allocations_of_second_forward(model, 1, {}) == 0);
  CHECK(allocations_of_second_forward(model, 2, two) == 0);
  two.attention = two.hidden_states = true;
  CHECK(allocations_of_second_forward(model, 1, two) == 0);
}

TEST_CASE("ThreadPool::run allocates nothing") {
  vit::ThreadPool pool(2);
  std::atomic<long> sum{0};
  // A capture larger than any small-buffer optimisation std::function might have.
  long big[16] = {};
  auto task = [&sum, big](vit::Index t, int) { sum += long(t) + big[0]; };
  pool.run(8, task);
  const long before = allocations.load();
  for (int rep = 0; rep < 100; ++rep) pool.run(8, task);
  CHECK(allocations.load() - before == 0);
  CHECK(sum == 101L * 28);
}

TEST_CASE("optimizer steps, gradient clipping and zero_grad allocate nothing") {
  // State is allocated when the optimizer is made; even the first step (SGD's momentum
  // buffers start there) allocates nothing.
  vit::Architecture a = vit::preset_architecture("deit_tiny_distilled_patch16_224");
  a.depth = 2;
  vit::VisionTransformer<vit::DynamicConfig<float>> model(a), grad_model(a);
  vit::VisionTransformer<vit::DynamicConfig<double>> dmodel(a), dgrad_model(a);
  const auto params = model.named_parameters();
  const auto grads = grad_model.named_parameters();
  for (const auto& g : grads) {
    long n = 1;
    for (auto d : g.shape) n *= long(d);
    for (long j = 0; j < n; ++j) g.data[j] = float((j % 7) - 3) * 0.01f;
  }
  auto settings = vit::train::param_settings(params, [](const auto& p, auto& s) {
    s.frozen = p.name == "cls_token";
    if (p.name.rfind("head", 0) != 0) s.lr_scale = 0.1;
  });
  vit::train::AdamWOptions ao;
  ao.weight_decay = 0.05;
  vit::train::AdamW<float> adamw(params, grads, ao, settings);
  vit::train::SGDOptions so;
  so.momentum = 0.9;
  so.weight_decay = 1e-4;
  so.nesterov = true;
  vit::train::SGD<float> sgd(params, grads, so);
  const auto dparams = dmodel.named_parameters();
  const auto dgrads = dgrad_model.named_parameters();
  vit::train::SGD<double> dsgd(dparams, dgrads, so);
  vit::train::AdamW<double> dadamw(dparams, dgrads);
  const long before = allocations.load();
  Eigen::internal::set_is_malloc_allowed(false);
  double norms = 0;
  try {
    for (int step = 0; step < 3; ++step) {
      norms += adamw.clip_grad_norm(0.5) + vit::train::clip_grad_norm(grads, 1.0) +
               vit::train::global_grad_norm(grads) + adamw.grad_norm();
      adamw.step(1e-3);
      sgd.step(1e-2);
      dsgd.step(1e-2);
      dadamw.step(1e-3);
    }
    adamw.zero_grad();
    dsgd.zero_grad();
    vit::train::zero_grad(dgrads);
  } catch (...) {
    Eigen::internal::set_is_malloc_allowed(true);
    throw;
  }
  Eigen::internal::set_is_malloc_allowed(true);
  CHECK(allocations.load() - before == 0);
  CHECK(norms > 0);
  CHECK(adamw.steps() == 3);
  CHECK(sgd.steps() == 3);
  CHECK(vit::train::global_grad_norm(grads) == 0.0);
}
