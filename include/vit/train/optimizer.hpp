// vit/train/optimizer.hpp - AdamW and SGD over a model's named parameters, with timm's
// weight-decay grouping, gradient clipping and resumable state.
//
// An optimizer works on two paired lists of ParameterRef: the model's parameters and
// their gradients, e.g. the named_parameters() of the model and of a second model of
// the same architecture that holds the gradients (same names, shapes and order):
//
//   auto params = model.named_parameters(), grads = grad_model.named_parameters();
//   vit::train::AdamWOptions o;
//   o.weight_decay = 0.05;
//   vit::train::AdamW<float> opt(params, grads, o);  // timm's decay / no-decay split
//   vit::train::CosineSchedule lr;  // vit/train/schedule.hpp
//   ...
//   for (std::int64_t step = 0; ...; ++step) {
//     opt.zero_grad();
//     // ... backward pass fills the gradients ...
//     opt.clip_grad_norm(1.0);
//     opt.step(lr(step));
//   }
//   opt.save_state("optimizer.safetensors");  // and later opt.load_state(...) to resume
//
// The updates are those of torch.optim.AdamW and torch.optim.SGD (single-tensor code
// path), element by element in Scalar arithmetic with the scalar coefficients computed in
// double, as PyTorch does, with a fused multiply-add where PyTorch's vectorized CPU kernel
// has one (add with alpha). float results then agree with PyTorch's to a few roundings. Every
// parameter has its own settings (ParamSettings): whether weight decay applies (by default timm's
// rule, see uses_weight_decay), a learning-rate multiplier (e.g. a smaller rate for the backbone
// when fine-tuning) and a frozen flag (e.g. linear probing: the parameter is never touched and has
// no optimizer state).
//
// All state is allocated when the optimizer is made; step(), zero_grad(), grad_norm()
// and clip_grad_norm() allocate nothing. The pointers in the ParameterRefs must stay
// valid for the optimizer's lifetime (VisionTransformer::named_parameters() unpacks
// packed weights: do not call pack_weights() while training).
#pragma once

#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "vit/error.hpp"
#include "vit/io/safetensors.hpp"
#include "vit/vision_transformer.hpp"

namespace vit::train {

// --- which parameters get weight decay ------------------------------------------------

/// How an optimizer treats one parameter.
struct ParamSettings {
  bool weight_decay = true;  ///< apply the optimizer's weight decay to it
  double lr_scale = 1.0;     ///< its learning rate is lr * lr_scale (timm's "lr_scale")
  bool frozen = false;       ///< never updated, gradient ignored, no state kept
};

/// The names VisionTransformer.no_weight_decay() returns in timm: the prefix tokens and
/// the learned position table.
inline const std::set<std::string>& no_weight_decay_names() {
  static const std::set<std::string> names{"cls_token", "dist_token", "pos_embed"};
  return names;
}

/// timm's rule (param_groups_weight_decay, as used by create_optimizer_v2 for a
/// VisionTransformer): no weight decay for tensors with at most one dimension (biases,
/// LayerNorm weights and biases), for names ending in ".bias", and for the names in
/// no_weight_decay_names(); weight decay for everything else.
inline bool uses_weight_decay(const std::string& name, const std::vector<std::int64_t>& shape) {
  const std::string bias = ".bias";
  const bool is_bias =
      name.size() >= bias.size() && name.compare(name.size() - bias.size(), bias.size(), bias) == 0;
  return shape.size() > 1 && !is_bias && no_weight_decay_names().count(name) == 0;
}

/// uses_weight_decay(p.name, p.shape).
template <class Scalar>
bool uses_weight_decay(const ParameterRef<Scalar>& p) {
  return uses_weight_decay(p.name, p.shape);
}

/// One ParamSettings per parameter: timm's weight-decay rule, lr_scale 1, not frozen.
template <class Scalar>
std::vector<ParamSettings> default_param_settings(const std::vector<ParameterRef<Scalar>>& params) {
  std::vector<ParamSettings> s(params.size());
  for (std::size_t i = 0; i < params.size(); ++i) s[i].weight_decay = uses_weight_decay(params[i]);
  return s;
}

/// default_param_settings(params), then customize(params[i], settings[i]) for each i.
/// E.g. a linear probe: `[](const auto& p, ParamSettings& s) { s.frozen = p.name.rfind("head.",
/// 0) != 0; }`.
template <class Scalar, class Customize>
std::vector<ParamSettings> param_settings(const std::vector<ParameterRef<Scalar>>& params,
                                          Customize&& customize) {
  std::vector<ParamSettings> s = default_param_settings(params);
  for (std::size_t i = 0; i < params.size(); ++i) customize(params[i], s[i]);
  return s;
}

namespace detail {

inline std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

inline std::string quoted(const std::string& s) { return "'" + s + "'"; }

inline std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// Element count of a parameter; argument_error for negative dims or a null pointer.
template <class Scalar>
Eigen::Index numel(const ParameterRef<Scalar>& p, const char* who) {
  Eigen::Index n = 1;
  for (std::int64_t d : p.shape) {
    if (d < 0)
      throw argument_error(std::string(who) + ": tensor " + quoted(p.name) + " has shape " +
                           shape_string(p.shape) + " with a negative dim");
    n *= static_cast<Eigen::Index>(d);
  }
  if (n > 0 && p.data == nullptr)
    throw argument_error(std::string(who) + ": tensor " + quoted(p.name) + " has no data");
  return n;
}

template <class Scalar>
using ArrayMap = Eigen::Map<Eigen::Array<Scalar, Eigen::Dynamic, 1>>;

template <class Scalar>
ArrayMap<Scalar> map(const ParameterRef<Scalar>& p, Eigen::Index n) {
  return ArrayMap<Scalar>(p.data, n);
}

// Sum of squares of the gradients i with keep(i), accumulated in double.
template <class Scalar, class Keep>
double grad_sum_squares(const std::vector<ParameterRef<Scalar>>& grads, Keep&& keep) {
  double sum = 0;
  for (std::size_t i = 0; i < grads.size(); ++i) {
    if (!keep(i)) continue;
    const Eigen::Index n = numel(grads[i], "grad norm");
    if (n) sum += map(grads[i], n).template cast<double>().square().sum();
  }
  return sum;
}

// torch.nn.utils.clip_grad_norm_ over the gradients i with keep(i).
template <class Scalar, class Keep>
double clip_grads(const std::vector<ParameterRef<Scalar>>& grads, double max_norm, Keep&& keep) {
  if (!(max_norm > 0) || !std::isfinite(max_norm))
    throw argument_error("clip_grad_norm: max_norm = " + number(max_norm) +
                         " must be finite and positive");
  const double total = std::sqrt(grad_sum_squares(grads, keep));
  // The coefficient in Scalar arithmetic from the norm rounded to Scalar, as PyTorch
  // computes it on a Scalar tensor (a double coefficient can differ from it by an ulp).
  const Scalar c =
      static_cast<Scalar>(max_norm) / (static_cast<Scalar>(total) + static_cast<Scalar>(1e-6));
  // PyTorch multiplies by min(coef, 1) unconditionally; multiplying by 1 changes nothing.
  // A NaN norm gives a NaN coef that, as in PyTorch, reaches the gradients.
  if (c >= Scalar(1)) return total;
  for (std::size_t i = 0; i < grads.size(); ++i) {
    if (!keep(i)) continue;
    const Eigen::Index n = numel(grads[i], "clip_grad_norm");
    if (n) map(grads[i], n) *= c;
  }
  return total;
}

}  // namespace detail

// --- gradient helpers -----------------------------------------------------------------

/// Sets every gradient tensor to zero.
template <class Scalar>
void zero_grad(const std::vector<ParameterRef<Scalar>>& grads) {
  for (const auto& g : grads) {
    const Eigen::Index n = detail::numel(g, "zero_grad");
    if (n) detail::map(g, n).setZero();
  }
}

/// The 2-norm of all gradients taken together (as if concatenated into one vector).
template <class Scalar>
double global_grad_norm(const std::vector<ParameterRef<Scalar>>& grads) {
  return std::sqrt(detail::grad_sum_squares(grads, [](std::size_t) { return true; }));
}

/// torch.nn.utils.clip_grad_norm_(max_norm, norm_type=2): the total 2-norm of all
/// gradients; when max_norm / (total + 1e-6) < 1, every gradient is multiplied by it.
/// Returns the total norm before clipping. argument_error unless max_norm > 0.
template <class Scalar>
double clip_grad_norm(const std::vector<ParameterRef<Scalar>>& grads, double max_norm) {
  return detail::clip_grads(grads, max_norm, [](std::size_t) { return true; });
}

// --- the optimizers -------------------------------------------------------------------

/// What AdamW and SGD share: the paired parameter and gradient lists, the per-parameter
/// settings, the step count and the state buffers, and saving / loading that state.
///
/// State tensors are named "optimizer.<buffer>.<parameter name>" (buffer "exp_avg" and
/// "exp_avg_sq" for AdamW, "momentum_buffer" for SGD with momentum), have the parameter's
/// shape and exist for unfrozen parameters only; "optimizer.step" (I64, shape []) is the
/// number of steps taken. Files carry the metadata "optimizer" = "AdamW" or "SGD".
template <class Scalar>
class Optimizer {
 public:
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "vit::train optimizers work on float or double");

  virtual ~Optimizer() = default;

  /// One update of every unfrozen parameter with learning rate lr (times its
  /// lr_scale); see AdamW and SGD.
  virtual void step(double lr) = 0;

  const std::vector<ParameterRef<Scalar>>& params() const { return params_; }
  const std::vector<ParameterRef<Scalar>>& grads() const { return grads_; }
  const std::vector<ParamSettings>& settings() const { return settings_; }
  /// "AdamW" or "SGD".
  const std::string& kind() const { return kind_; }

  /// Steps taken (the bias-correction step of AdamW, 0 before the first step()).
  std::int64_t steps() const { return steps_; }

  /// Sets every gradient (frozen parameters' too) to zero.
  void zero_grad() const { train::zero_grad(grads_); }

  /// 2-norm of the gradients of the unfrozen parameters (frozen ones have no gradient in
  /// PyTorch, so they do not count).
  double grad_norm() const {
    return std::sqrt(detail::grad_sum_squares(grads_, [this](std::size_t i) { return live(i); }));
  }

  /// train::clip_grad_norm over the gradients of the unfrozen parameters.
  double clip_grad_norm(double max_norm) const {
    return detail::clip_grads(grads_, max_norm, [this](std::size_t i) { return live(i); });
  }

  /// Number of state values held (all buffers; frozen parameters have none).
  std::size_t state_numel() const {
    std::size_t n = 0;
    for (const auto& b : buffers_) n += b.data.size();
    return n;
  }

  /// Views of the state tensors (names and shapes as saved), pointing into this
  /// optimizer; "optimizer.step" is steps(), not among them.
  std::vector<ParameterRef<Scalar>> state_tensors() {
    std::vector<ParameterRef<Scalar>> out;
    for (auto& b : buffers_)
      for (std::size_t i = 0; i < params_.size(); ++i)
        if (live(i))
          out.push_back({state_name(b.name, i), params_[i].shape, b.data.data() + offset_[i]});
    return out;
  }

  /// Adds the state (in Scalar's dtype) and the "optimizer" metadata to `w`, e.g. next to
  /// the model's weights in one training checkpoint.
  void add_state(io::SafeTensorsWriter& w) const {
    constexpr io::DType dtype = std::is_same_v<Scalar, float> ? io::DType::F32 : io::DType::F64;
    w.set_metadata("optimizer", kind_);
    std::vector<std::uint8_t> step_bytes(8);
    const std::int64_t s = steps_;
    std::memcpy(step_bytes.data(), &s, 8);  // little-endian hosts only (see safetensors.hpp)
    w.add_raw(step_name(), io::DType::I64, {}, std::move(step_bytes));
    for (const auto& b : buffers_)
      for (std::size_t i = 0; i < params_.size(); ++i)
        if (live(i))
          w.add(state_name(b.name, i), params_[i].shape, b.data.data() + offset_[i], dtype);
  }

  /// Writes the state to a safetensors file (atomically, see SafeTensorsWriter::write).
  void save_state(const std::string& path) const {
    io::SafeTensorsWriter w;
    add_state(w);
    w.write(path);
  }

  /// Restores the state written by add_state / save_state. Tensors not starting with
  /// "optimizer." are ignored (a training checkpoint may hold the weights too). Throws
  /// checkpoint_error naming the file and the tensor when the file was written by another
  /// kind of optimizer, or a state tensor is missing, has the wrong shape or dtype, or
  /// belongs to no unfrozen parameter. Nothing is changed unless the whole state fits.
  void load_state(const io::SafeTensors& file) {
    const std::string& src = file.source();
    const auto& meta = file.metadata();
    const auto kind = meta.find("optimizer");
    if (kind == meta.end())
      throw checkpoint_error(src + ": no \"optimizer\" metadata: not an optimizer state file");
    if (kind->second != kind_)
      throw checkpoint_error(src + ": optimizer state of " + detail::quoted(kind->second) +
                             ", cannot load it into " + kind_);

    // Check everything before changing anything.
    const std::string sname = step_name();
    if (!file.contains(sname))
      throw checkpoint_error(src + ": missing tensor " + detail::quoted(sname));
    const io::TensorInfo& st = file.info(sname);
    if (st.dtype != io::DType::I64 || !st.shape.empty())
      throw checkpoint_error(src + ": tensor " + detail::quoted(sname) + " is " +
                             io::dtype_name(st.dtype) + " " + detail::shape_string(st.shape) +
                             ", expected I64 []");
    std::int64_t steps = 0;
    std::memcpy(&steps, file.raw(sname), 8);
    if (steps < 0)
      throw checkpoint_error(src + ": tensor " + detail::quoted(sname) + " = " +
                             std::to_string(steps) + " is negative");

    std::set<std::string> expected{sname};
    for (const auto& b : buffers_)
      for (std::size_t i = 0; i < params_.size(); ++i) {
        if (!live(i)) continue;
        const std::string name = state_name(b.name, i);
        expected.insert(name);
        if (!file.contains(name))
          throw checkpoint_error(src + ": missing tensor " + detail::quoted(name) + " (" + kind_ +
                                 " state of parameter " + detail::quoted(params_[i].name) + ")");
        const io::TensorInfo& t = file.info(name);
        if (t.shape != params_[i].shape)
          throw checkpoint_error(src + ": tensor " + detail::quoted(name) + " has shape " +
                                 detail::shape_string(t.shape) + ", expected " +
                                 detail::shape_string(params_[i].shape) +
                                 " (the shape of parameter " + detail::quoted(params_[i].name) +
                                 ")");
        file.check_read(name, static_cast<std::size_t>(numel_[i]));  // dtype
      }
    for (const io::TensorInfo& t : file.tensors())
      if (t.name.rfind("optimizer.", 0) == 0 && expected.count(t.name) == 0)
        throw checkpoint_error(src + ": unexpected tensor " + detail::quoted(t.name) +
                               " (no such state for this " + kind_ +
                               ": unknown or frozen parameter, or another configuration)");

    for (auto& b : buffers_)
      for (std::size_t i = 0; i < params_.size(); ++i)
        if (live(i))
          file.read(state_name(b.name, i), b.data.data() + offset_[i],
                    static_cast<std::size_t>(numel_[i]));
    steps_ = steps;
  }

  /// load_state(io::SafeTensors::open(path)).
  void load_state(const std::string& path) { load_state(io::SafeTensors::open(path)); }

 protected:
  struct Buffer {
    std::string name;
    std::vector<Scalar> data;  // the unfrozen parameters' state, back to back
  };

  // Validates the lists and settings; allocates one zeroed buffer per name in `buffers`.
  Optimizer(std::string kind, std::vector<ParameterRef<Scalar>> params,
            std::vector<ParameterRef<Scalar>> grads, std::vector<ParamSettings> settings,
            const std::vector<std::string>& buffers)
      : kind_(std::move(kind)),
        params_(std::move(params)),
        grads_(std::move(grads)),
        settings_(std::move(settings)) {
    const char* who = kind_.c_str();
    if (grads_.size() != params_.size())
      throw argument_error(kind_ + ": " + std::to_string(params_.size()) + " parameters but " +
                           std::to_string(grads_.size()) + " gradients");
    if (settings_.empty()) settings_ = default_param_settings(params_);
    if (settings_.size() != params_.size())
      throw argument_error(kind_ + ": " + std::to_string(params_.size()) + " parameters but " +
                           std::to_string(settings_.size()) + " settings");
    std::set<std::string> names;
    Eigen::Index total = 0;
    numel_.resize(params_.size());
    offset_.resize(params_.size());
    for (std::size_t i = 0; i < params_.size(); ++i) {
      const ParameterRef<Scalar>& p = params_[i];
      const ParameterRef<Scalar>& g = grads_[i];
      if (g.name != p.name || g.shape != p.shape)
        throw argument_error(kind_ + ": parameter " + std::to_string(i) + " is " +
                             detail::quoted(p.name) + " " + detail::shape_string(p.shape) +
                             " but gradient " + std::to_string(i) + " is " +
                             detail::quoted(g.name) + " " + detail::shape_string(g.shape));
      if (!names.insert(p.name).second)
        throw argument_error(kind_ + ": parameter " + detail::quoted(p.name) + " appears twice");
      numel_[i] = detail::numel(p, who);
      detail::numel(g, who);
      if (numel_[i] > 0 && p.data == g.data)
        throw argument_error(kind_ + ": parameter " + detail::quoted(p.name) +
                             " and its gradient are the same memory");
      const double s = settings_[i].lr_scale;
      if (!std::isfinite(s) || s < 0)
        throw argument_error(kind_ + ": parameter " + detail::quoted(p.name) + ": lr_scale " +
                             detail::number(s) + " must be finite and non-negative");
      offset_[i] = total;
      if (!settings_[i].frozen) total += numel_[i];
    }
    for (const std::string& b : buffers)
      buffers_.push_back({b, std::vector<Scalar>(static_cast<std::size_t>(total), Scalar(0))});
  }

  bool live(std::size_t i) const { return !settings_[i].frozen && numel_[i] > 0; }

  // Maps of parameter i, its gradient, and its slice of buffer b.
  detail::ArrayMap<Scalar> param(std::size_t i) const { return detail::map(params_[i], numel_[i]); }
  Eigen::Map<const Eigen::Array<Scalar, Eigen::Dynamic, 1>> grad(std::size_t i) const {
    return Eigen::Map<const Eigen::Array<Scalar, Eigen::Dynamic, 1>>(grads_[i].data, numel_[i]);
  }
  detail::ArrayMap<Scalar> state(std::size_t b, std::size_t i) {
    return detail::ArrayMap<Scalar>(buffers_[b].data.data() + offset_[i], numel_[i]);
  }

  // Checks the learning rate given to step().
  void check_lr(double lr) const {
    if (!std::isfinite(lr) || lr < 0)
      throw argument_error(kind_ + "::step: lr = " + detail::number(lr) +
                           " must be finite and non-negative");
  }

  static std::string step_name() { return "optimizer.step"; }
  std::string state_name(const std::string& buffer, std::size_t i) const {
    return "optimizer." + buffer + "." + params_[i].name;
  }

  std::string kind_;
  std::vector<ParameterRef<Scalar>> params_;
  std::vector<ParameterRef<Scalar>> grads_;
  std::vector<ParamSettings> settings_;
  std::vector<Eigen::Index> numel_;
  std::vector<Eigen::Index> offset_;
  std::vector<Buffer> buffers_;
  std::int64_t steps_ = 0;
};

/// Hyperparameters of AdamW; the defaults are torch.optim.AdamW's.
struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;  ///< decoupled, for the parameters whose settings say so
};

/// torch.optim.AdamW (amsgrad=False, maximize=False). For each unfrozen parameter p with
/// gradient g, at step t = steps() after the increment and lr_p = lr * lr_scale:
///
///   p   *= 1 - lr_p * weight_decay                 (weight decay only where it applies)
///   m    = beta1 * m + (1 - beta1) * g
///   v    = beta2 * v + (1 - beta2) * g * g
///   p   -= lr_p / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
template <class Scalar>
class AdamW : public Optimizer<Scalar> {
 public:
  /// `settings` empty: default_param_settings(params). Throws argument_error for mismatched
  /// lists (sizes, names, shapes), duplicate names, aliasing parameter and gradient, or
  /// invalid options (betas outside [0, 1), negative or non-finite eps / weight_decay).
  AdamW(std::vector<ParameterRef<Scalar>> params, std::vector<ParameterRef<Scalar>> grads,
        AdamWOptions options = {}, std::vector<ParamSettings> settings = {})
      : Optimizer<Scalar>("AdamW", std::move(params), std::move(grads), std::move(settings),
                          {"exp_avg", "exp_avg_sq"}),
        options_(options) {
    auto check = [](const char* what, double v, bool ok) {
      if (!std::isfinite(v) || !ok)
        throw argument_error(std::string("AdamW: ") + what + " = " + detail::number(v) +
                             " is invalid");
    };
    check("beta1", options_.beta1, options_.beta1 >= 0 && options_.beta1 < 1);
    check("beta2", options_.beta2, options_.beta2 >= 0 && options_.beta2 < 1);
    check("eps", options_.eps, options_.eps >= 0);
    check("weight_decay", options_.weight_decay, options_.weight_decay >= 0);
  }

  const AdamWOptions& options() const { return options_; }

  /// One update with base learning rate `lr` (>= 0). Allocates nothing.
  void step(double lr) override {
    this->check_lr(lr);
    const std::int64_t t = ++this->steps_;
    const double b1 = options_.beta1, b2 = options_.beta2;
    const double bias_correction1 = 1 - std::pow(b1, static_cast<double>(t));
    const double bias_correction2 = 1 - std::pow(b2, static_cast<double>(t));
    const Scalar sqrt_bc2 = static_cast<Scalar>(std::sqrt(bias_correction2));
    const Scalar eps = static_cast<Scalar>(options_.eps);
    const Scalar sb1 = static_cast<Scalar>(b1), sb1c = static_cast<Scalar>(1 - b1);
    const Scalar sb2 = static_cast<Scalar>(b2), sb2c = static_cast<Scalar>(1 - b2);
    for (std::size_t i = 0; i < this->params_.size(); ++i) {
      if (!this->live(i)) continue;
      const ParamSettings& s = this->settings_[i];
      const double lr_p = lr * s.lr_scale;
      auto p = this->param(i);
      const auto g = this->grad(i);
      auto m = this->state(0, i);
      auto v = this->state(1, i);
      const Scalar decay =
          static_cast<Scalar>(s.weight_decay ? 1 - lr_p * options_.weight_decay : 1.0);
      const Scalar step_size = static_cast<Scalar>(lr_p / bias_correction1);
      // One pass over p, g, m and v, in PyTorch's order of operations (fma where its
      // vectorized CPU kernel for add(alpha=) has one). std::sqrt, not
      // Eigen's: with EIGEN_FAST_MATH (the default) Eigen's vectorized float sqrt is an
      // approximation that also flushes denormals to zero.
      const Eigen::Index n = p.size();
      for (Eigen::Index j = 0; j < n; ++j) {
        const Scalar gj = g[j];
        const Scalar mj = std::fma(gj, sb1c, m[j] * sb1);
        const Scalar vj = v[j] * sb2 + sb2c * gj * gj;
        m[j] = mj;
        v[j] = vj;
        p[j] = p[j] * decay - step_size * mj / (std::sqrt(vj) / sqrt_bc2 + eps);
      }
    }
  }

 private:
  AdamWOptions options_;
};

/// Hyperparameters of SGD; the defaults are torch.optim.SGD's (no momentum).
struct SGDOptions {
  double momentum = 0;
  double dampening = 0;
  double weight_decay = 0;  ///< coupled (added to the gradient), where the settings say so
  bool nesterov = false;
};

/// torch.optim.SGD (maximize=False). For each unfrozen parameter p with gradient g and
/// lr_p = lr * lr_scale (the gradient tensor itself is left unchanged):
///
///   d  = g + weight_decay * p                     (weight decay only where it applies)
///   b  = d on the first step, else momentum * b + (1 - dampening) * d
///   d  = nesterov ? d + momentum * b : b          (when momentum != 0)
///   p -= lr_p * d
template <class Scalar>
class SGD : public Optimizer<Scalar> {
 public:
  /// As AdamW's constructor; invalid options: negative or non-finite momentum, dampening
  /// or weight_decay, nesterov without momentum or with dampening (as PyTorch).
  SGD(std::vector<ParameterRef<Scalar>> params, std::vector<ParameterRef<Scalar>> grads,
      SGDOptions options = {}, std::vector<ParamSettings> settings = {})
      : Optimizer<Scalar>("SGD", std::move(params), std::move(grads), std::move(settings),
                          options.momentum != 0 ? std::vector<std::string>{"momentum_buffer"}
                                                : std::vector<std::string>{}),
        options_(options) {
    auto check = [](const char* what, double v) {
      if (!std::isfinite(v) || v < 0)
        throw argument_error(std::string("SGD: ") + what + " = " + detail::number(v) +
                             " must be finite and non-negative");
    };
    check("momentum", options_.momentum);
    check("dampening", options_.dampening);
    check("weight_decay", options_.weight_decay);
    if (options_.nesterov && (options_.momentum <= 0 || options_.dampening != 0))
      throw argument_error("SGD: nesterov needs momentum > 0 and dampening 0");
  }

  const SGDOptions& options() const { return options_; }

  /// One update with base learning rate `lr` (>= 0). Allocates nothing.
  void step(double lr) override {
    this->check_lr(lr);
    const bool first = this->steps_ == 0;
    ++this->steps_;
    const Scalar mu = static_cast<Scalar>(options_.momentum);
    const Scalar keep = static_cast<Scalar>(1 - options_.dampening);
    const bool momentum = options_.momentum != 0, nesterov = options_.nesterov;
    for (std::size_t i = 0; i < this->params_.size(); ++i) {
      if (!this->live(i)) continue;
      const ParamSettings& s = this->settings_[i];
      const Scalar neg_lr = static_cast<Scalar>(-(lr * s.lr_scale));
      const Scalar wd = static_cast<Scalar>(s.weight_decay ? options_.weight_decay : 0.0);
      auto p = this->param(i);
      const auto g = this->grad(i);
      Scalar* b = momentum ? this->state(0, i).data() : nullptr;
      // One pass, in PyTorch's order of operations, with an fma wherever its vectorized CPU
      // kernel for add(alpha=) has one.
      const Eigen::Index n = p.size();
      for (Eigen::Index j = 0; j < n; ++j) {
        Scalar d = g[j];
        if (wd != 0) d = std::fma(p[j], wd, d);
        if (momentum) {
          const Scalar bj = first ? d : std::fma(d, keep, b[j] * mu);
          b[j] = bj;
          d = nesterov ? std::fma(bj, mu, d) : bj;
        }
        p[j] = std::fma(d, neg_lr, p[j]);
      }
    }
  }

 private:
  SGDOptions options_;
};

}  // namespace vit::train
