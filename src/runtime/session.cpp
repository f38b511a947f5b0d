#include "runtime/session.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <numeric>
#include <optional>
#include <thread>

#include "backend/backend.h"
#include "gguf/gguf.h"
#include "model/model.h"
#include "runtime/kv_cache.h"
#include "sampling/grammar.h"
#include "tokenizer/tokenizer.h"
#include "util/check.h"
#include "util/thread_pool.h"

namespace qwen {

namespace {
using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}
}  // namespace

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::Running:
      return "running";
    case FinishReason::Eog:
      return "eog";
    case FinishReason::Stop:
      return "stop";
    case FinishReason::Length:
      return "length";
    case FinishReason::ContextFull:
      return "context_full";
    case FinishReason::Cancelled:
      return "cancelled";
  }
  return "?";
}

// Logit rows on the host in the backend's fastest download target (page-locked for CUDA: 64
// sampled streams bring back 39 MB per step), grown on demand and never shrunk.
class HostRows {
 public:
  HostRows() = default;
  HostRows(const HostRows&) = delete;
  HostRows& operator=(const HostRows&) = delete;
  ~HostRows() { release(); }
  void reserve(Backend& be, size_t count) {
    if (count <= size_) return;
    release();
    data_ = static_cast<float*>(be.alloc_host(count * sizeof(float)));
    be_ = &be, size_ = count;
  }
  float* data() { return data_; }

 private:
  void release() {
    if (data_) be_->free_host(data_);
    data_ = nullptr, size_ = 0;
  }
  Backend* be_ = nullptr;
  float* data_ = nullptr;
  size_t size_ = 0;
};

struct Engine::Impl {
  std::shared_ptr<gguf::File> file;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Tokenizer> tokenizer;  // null when the GGUF has no tokenizer.ggml.* keys
  std::unique_ptr<Model> model;
  std::unique_ptr<KVCache> kv;
  int n_ctx = 0, n_seq = 0, max_batch = 0;
  int max_out = 0;  // logit rows per forward call
  double load_ms = 0;
  // Samples the rows of a collected forward side by side: a 64-stream step of sampled requests
  // is otherwise ~64 serial passes over the vocabulary while the GPU waits for the next launch.
  ThreadPool row_pool{int(std::min(8u, std::max(1u, std::thread::hardware_concurrency())))};
  // Per-forward inputs in backend memory, each [max_batch] int32 (d_top: argmax of the logit
  // rows), and logits [max_out][n_vocab].
  void* io = nullptr;
  int32_t *d_ids = nullptr, *d_pos = nullptr, *d_seq = nullptr, *d_rows = nullptr, *d_top = nullptr;
  float* d_logits = nullptr;
  // Host staging laid out as the device buffers d_ids..d_rows ([4][max_batch], contiguous), so
  // one upload refreshes all four.
  std::vector<int32_t> h_io;
  int32_t *h_ids = nullptr, *h_pos = nullptr, *h_seq = nullptr, *h_rows = nullptr;
  std::vector<std::vector<int32_t>> slots;  // tokens held by each slot
  // The vocabulary as a byte trie for grammars, made at the first constrained generation.
  std::shared_ptr<const TokenTrie> token_trie;
  bool use_graphs = false;
  // [n_seq + 1]: how far decode steps of n tokens have got towards a graph in graph slot n.
  // The first step of each size runs eagerly, so a backend can size any scratch it grows on
  // first use (nothing may be allocated inside a capture); the second captures the graph.
  enum class GraphState : uint8_t { Unseen, RanEagerly, Captured };
  std::vector<GraphState> graphs;

  // The forward step() launched last, until collect() reads it back. Its last forward call may
  // still run on the backend, with its rows in d_top / d_logits; rows of earlier calls (when the
  // inputs needed several) are already on the host, in top / logits.
  //
  // Staging: h_io is rewritten only after the backend has finished reading it. Each forward call
  // uploads h_io; the eager calls (everything but a launch's last call) wait for their results
  // before the next rewrite, and a launch's last call is waited for by collect(), which runs
  // before anything else writes h_io. So an upload that reads pageable host memory
  // asynchronously never races with the next step's staging.
  struct Launch {
    struct Row {        // one per input, in input order
      Generation* gen;  // null once the generation left (ended in emit, or destroyed)
      int slot;
      size_t n_fed;     // tokens fed (a prompt chunk, or the one fresh token)
      bool samples;     // the generation's input ends here: its next token comes from this row
      bool fresh;       // the input is a sampled token (dropped from the slot if it leaves)
      size_t slot_len;  // the slot's length right after this input
    };
    std::vector<Row> rows;
    bool greedy = true;         // rows come back as argmax ids (top), else as logits
    std::vector<int32_t> top;   // [rows]
    HostRows logits;            // [rows][n_vocab], not greedy only
    size_t first_deferred = 0;  // rows first_deferred.. are still on the backend
    Clock::time_point t0;       // when the launch began (timing)
  };
  Launch launch;  // buffers kept between steps
  bool in_flight = false;

  ~Impl() {
    if (io != nullptr) backend->free(io);
  }

  // Whether the forward in flight feeds a live generation on `slot`.
  bool in_flight_on(int slot) const {
    if (!in_flight) return false;
    return std::any_of(launch.rows.begin(), launch.rows.end(),
                       [&](const Launch::Row& r) { return r.gen != nullptr && r.slot == slot; });
  }
  // Takes a generation out of the forward in flight: its row is ignored when read back, and a
  // fed sampled token leaves the slot again (its K/V row is overwritten later; the slot's length
  // is what counts). A prompt chunk stays: its K/V are being written as the slot says.
  void leave(const Generation* g) noexcept {
    if (!in_flight) return;
    for (Launch::Row& r : launch.rows) {
      if (r.gen != g) continue;
      r.gen = nullptr;
      std::vector<int32_t>& slot = slots[size_t(r.slot)];
      // The slot is exactly as the launch left it (anything that changed it drains first).
      if (r.fresh && slot.size() == r.slot_len) slot.pop_back();
    }
  }

  // Launches one forward over the staged host arrays (n tokens, n_out logit rows) without
  // waiting for it; with `argmax`, also the argmax of each logit row into d_top.
  void launch_forward(int n, int n_out, bool argmax, const ForwardTap& tap = {}) {
    backend->upload(d_ids, h_io.data(), size_t(h_rows + n_out - h_ids) * sizeof(int32_t));
    int max_run = 0;  // the longest run of one sequence's tokens (Batch::max_run)
    for (int i = 0, run = 0; i < n; ++i) {
      run = i > 0 && h_seq[i] == h_seq[i - 1] ? run + 1 : 1;
      max_run = std::max(max_run, run);
    }
    const Batch batch{n, d_ids, d_pos, d_seq, max_run};
    // Small calls whose every row is an output (decode steps: one token per slot) replay a graph
    // captured once per n: it reads ids, positions and rows from the same device buffers, which
    // the uploads above refresh.
    const bool decode_shape = use_graphs && !tap && n == n_out && n <= n_seq;
    if (decode_shape && graphs[n] != GraphState::Unseen) {
      if (graphs[n] == GraphState::RanEagerly) {
        backend->begin_capture(n);
        model->forward(batch, kv->layers(), d_rows, n_out, d_logits);
        backend->end_capture();
        graphs[n] = GraphState::Captured;
      }
      backend->replay(n);
    } else {
      if (decode_shape) graphs[n] = GraphState::RanEagerly;
      model->forward(batch, kv->layers(), d_rows, n_out, d_logits, tap);
    }
    if (argmax) backend->argmax(d_top, d_logits, n_out, model->config().n_vocab);
  }
  // Waits for the forward launched last and downloads its logit rows into `logits`
  // [n_out][n_vocab], or only their argmax into `top` [n_out] when logits is null (greedy
  // decoding moves 4 bytes per row instead of the whole vocabulary).
  void read_back(int n_out, float* logits, int32_t* top) {
    if (logits != nullptr) {
      backend->download(logits, d_logits, size_t(n_out) * model->config().n_vocab * sizeof(float));
    } else {
      backend->download(top, d_top, size_t(n_out) * sizeof(int32_t));
    }
  }
  // One forward, waited for: launch_forward + read_back.
  void forward(int n, int n_out, float* logits, int32_t* top, const ForwardTap& tap = {}) {
    launch_forward(n, n_out, logits == nullptr, tap);
    read_back(n_out, logits, top);
  }

  // Stages tokens [b, b + n) of one sequence in `slot` at positions b.. as input rows 0..n-1,
  // every row an output row.
  void stage_run(std::span<const int32_t> tokens, size_t b, int n, int slot) {
    for (int t = 0; t < n; ++t) {
      h_ids[t] = tokens[b + size_t(t)];
      h_pos[t] = int32_t(b + size_t(t));
      h_seq[t] = slot;
      h_rows[t] = t;
    }
  }

  void check_token(int32_t id) const {
    QWEN_CHECK(id >= 0 && id < model->config().n_vocab, "token id ", id, " is outside the vocabulary [0, ",
               model->config().n_vocab, ")");
  }
};

namespace {

// A context beyond the positions the model is trained for is refused with the numbers, or run
// with a warning when the caller asked for that (EngineOptions::ctx_overflow).
void check_context(const EngineOptions& o, const ModelConfig& c, int n_ctx) {
  if (n_ctx <= c.n_ctx_max) return;
  const RopeScaling& sc = c.rope_scaling;
  const std::string trained =
      sc.type == RopeScalingType::None || sc.factor == 1.f
          ? str(c.arch_name, ".context_length = ", c.n_ctx_train, ", no rope scaling")
          : str(c.arch_name, ".context_length = ", c.n_ctx_train, ", ", rope_scaling_name(sc.type), " x",
                sc.factor, " over original_context_length ", sc.n_ctx_orig);
  const std::string what = str(o.model_path, ": a context of ", n_ctx, " tokens exceeds the ", c.n_ctx_max,
                               " positions the model is trained for (", trained, ")");
  QWEN_CHECK(o.ctx_overflow == CtxOverflow::Warn, what,
             "; use a smaller context, or --ctx-overflow warn to run past them");
  std::fprintf(stderr, "warning: %s; positions past %d are untrained\n", what.c_str(), c.n_ctx_max);
}

}  // namespace

Engine::Engine() : impl_(std::make_unique<Impl>()) {}
Engine::~Engine() = default;

std::unique_ptr<Engine> Engine::load(const EngineOptions& o) {
  const auto t0 = Clock::now();
  QWEN_CHECK(o.n_seq > 0, "n_seq = ", o.n_seq, " must be positive");
  QWEN_CHECK(o.max_batch > 0, "max_batch = ", o.max_batch, " must be positive");
  QWEN_CHECK(o.n_ctx >= 0, "n_ctx = ", o.n_ctx, " must not be negative");
  std::unique_ptr<Engine> e(new Engine());
  Impl& m = *e->impl_;
  m.file = gguf::File::open(o.model_path);
  m.backend = make_backend(o.device, o.n_threads, o.exact);
  if (m.file->has("tokenizer.ggml.model")) m.tokenizer = std::make_unique<Tokenizer>(*m.file);
  {  // The context is settled before the weights load, so a refused one costs no load time.
    const ModelConfig c = ModelConfig::from_gguf(*m.file);
    m.n_ctx = o.n_ctx > 0 ? o.n_ctx : c.n_ctx_max;
    check_context(o, c, m.n_ctx);
    if (o.kv_type) check_kv_type(*o.kv_type, c);
  }
  m.model = std::make_unique<Model>(*m.file, *m.backend, o.max_batch, o.on_progress);
  const ModelConfig& c = m.model->config();
  m.n_seq = o.n_seq;
  m.max_batch = o.max_batch;
  // Whole-sequence logits (eval_all) come out in chunks of max_out rows; generation needs one
  // row per slot.
  m.max_out = std::min(m.max_batch, std::max(m.n_seq, 64));
  const GGMLType kv_type =
      o.kv_type.value_or(m.backend->kind() == DeviceKind::CUDA ? GGMLType::F16 : GGMLType::F32);
  m.kv = std::make_unique<KVCache>(*m.backend, c, m.n_seq, m.n_ctx, kv_type);
  const size_t B = size_t(m.max_batch);
  m.io = m.backend->alloc(5 * B * sizeof(int32_t) + size_t(m.max_out) * c.n_vocab * sizeof(float));
  m.d_ids = static_cast<int32_t*>(m.io);
  m.d_pos = m.d_ids + B;
  m.d_seq = m.d_pos + B;
  m.d_rows = m.d_seq + B;
  m.d_top = m.d_rows + B;
  m.d_logits = reinterpret_cast<float*>(m.d_top + B);
  m.h_io.resize(4 * B);
  m.h_ids = m.h_io.data();
  m.h_pos = m.h_ids + B;
  m.h_seq = m.h_pos + B;
  m.h_rows = m.h_seq + B;
  m.slots.resize(m.n_seq);
  m.use_graphs = o.use_graphs && m.backend->supports_graphs();
  m.graphs.assign(size_t(m.n_seq) + 1, Impl::GraphState::Unseen);
  m.backend->synchronize();
  m.load_ms = ms_since(t0);
  return e;
}

const ModelConfig& Engine::config() const {
  return impl_->model->config();
}
const Tokenizer& Engine::tokenizer() const {
  QWEN_CHECK(impl_->tokenizer != nullptr, impl_->file->path(),
             ": the model has no tokenizer (no tokenizer.ggml.* keys); pass token ids instead of text");
  return *impl_->tokenizer;
}
Backend& Engine::backend() {
  return *impl_->backend;
}
Model& Engine::model() {
  return *impl_->model;
}
int Engine::n_ctx() const {
  return impl_->n_ctx;
}
int Engine::n_seq() const {
  return impl_->n_seq;
}
int Engine::max_batch() const {
  return impl_->max_batch;
}
int Engine::n_vocab() const {
  return impl_->model->config().n_vocab;
}
double Engine::load_ms() const {
  return impl_->load_ms;
}
size_t Engine::kv_bytes() const {
  return impl_->kv->nbytes();
}
GGMLType Engine::kv_type() const {
  return impl_->kv->type();
}

const std::vector<int32_t>& Engine::slot_tokens(int slot) const {
  QWEN_CHECK(slot >= 0 && slot < impl_->n_seq, "slot ", slot, " is outside [0, ", impl_->n_seq, ")");
  return impl_->slots[slot];
}

void Engine::clear_slot(int slot) {
  QWEN_CHECK(slot >= 0 && slot < impl_->n_seq, "slot ", slot, " is outside [0, ", impl_->n_seq, ")");
  if (impl_->in_flight_on(slot)) collect();  // its generation then no longer expects the slot's tail
  impl_->slots[slot].clear();
}

void Engine::eval(std::span<const Input> inputs, std::vector<float>& logits) {
  logits.resize(inputs.size() * size_t(n_vocab()));
  run(inputs, logits.data(), nullptr);
}

int Engine::warm_up() {
  Impl& m = *impl_;
  collect();
  for (int s = 0; s < m.n_seq; ++s)
    QWEN_CHECK(m.slots[s].empty(), "warm_up: slot ", s, " holds ", m.slots[s].size(), " tokens");
  if (!m.use_graphs) return 0;
  const std::vector<int32_t> zeros(size_t(m.n_ctx), 0);
  std::vector<Input> inputs;
  std::vector<int32_t> top(size_t(m.n_seq));
  // Prefill forwards of 64, 128, ... up to max_batch tokens (as far as the slots hold them):
  // the first forward of a size grows the backend's prefill scratch and loads its kernels.
  for (int n = std::min(64, m.max_batch);; n = std::min(2 * n, m.max_batch)) {
    inputs.clear();
    for (int s = 0, left = n; s < m.n_seq && left > 0; ++s) {
      const int k = std::min(left, m.n_ctx);
      inputs.push_back({s, std::span<const int32_t>(zeros.data(), size_t(k))});
      left -= k;
    }
    run(inputs, nullptr, top.data());
    for (int s = 0; s < m.n_seq; ++s) clear_slot(s);
    if (n == m.max_batch) break;
  }
  // Decode steps of every size, each twice: eager, then captured.
  const int sizes = std::min(m.n_seq, m.max_batch);
  const int32_t token = 0;
  inputs.clear();
  for (int n = 1; n <= sizes; ++n) {
    inputs.push_back({n - 1, std::span<const int32_t>(&token, 1)});
    for (int pass = 0; pass < 2; ++pass) run(inputs, nullptr, top.data());  // eager, then captured
    for (int s = 0; s < n; ++s) clear_slot(s);
  }
  return sizes;
}

void Engine::run(std::span<const Input> inputs, float* logits, int32_t* top, size_t* deferred) {
  Impl& m = *impl_;
  collect();  // a no-op in step(), which collected before launching
  const size_t n_vocab = size_t(this->n_vocab());
  std::vector<size_t> done(inputs.size(), 0);  // tokens of each input already evaluated
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Input& in = inputs[i];
    QWEN_CHECK(in.slot >= 0 && in.slot < m.n_seq, "eval: slot ", in.slot, " is outside [0, ", m.n_seq, ")");
    QWEN_CHECK(!in.tokens.empty(), "eval: input ", i, " for slot ", in.slot, " has no tokens");
    QWEN_CHECK(m.slots[in.slot].size() + in.tokens.size() <= size_t(m.n_ctx), "eval: slot ", in.slot,
               " holds ", m.slots[in.slot].size(), " tokens; ", in.tokens.size(),
               " more exceed n_ctx = ", m.n_ctx);
    for (size_t j = 0; j < i; ++j) {
      QWEN_CHECK(inputs[j].slot != in.slot, "eval: slot ", in.slot, " appears twice in one batch");
    }
    for (int32_t id : in.tokens) m.check_token(id);
  }
  // Pack tokens of all inputs into forward calls of at most max_batch tokens; an input's last
  // token requests a logit row (the row buffer holds max_out >= n_seq rows). Inputs are packed in
  // order, so the inputs that end in one call are consecutive: first, first + 1, ...
  size_t next = 0;  // first input with tokens left
  while (next < inputs.size()) {
    int n = 0, n_out = 0;
    const size_t first = next;
    for (size_t i = next; i < inputs.size() && n < m.max_batch; ++i) {
      const Input& in = inputs[i];
      std::vector<int32_t>& slot = m.slots[in.slot];
      while (done[i] < in.tokens.size() && n < m.max_batch) {
        m.h_ids[n] = in.tokens[done[i]];
        m.h_pos[n] = int32_t(slot.size());
        m.h_seq[n] = in.slot;
        slot.push_back(in.tokens[done[i]]);
        ++done[i];
        if (done[i] == in.tokens.size()) m.h_rows[n_out++] = n;
        ++n;
      }
    }
    while (next < inputs.size() && done[next] == inputs[next].tokens.size()) ++next;
    if (n_out == 0) {  // no input finished in this call: compute one row and drop it
      m.h_rows[0] = n - 1;
      int32_t ignored;
      m.forward(n, 1, nullptr, &ignored);
      continue;
    }
    QWEN_ASSERT(next - first == size_t(n_out));
    if (deferred != nullptr && next == inputs.size()) {  // step()'s launch: collect() reads it
      m.launch_forward(n, n_out, logits == nullptr);
      *deferred = first;
      return;
    }
    m.forward(n, n_out, logits != nullptr ? logits + first * n_vocab : nullptr,
              logits != nullptr ? nullptr : top + first);
  }
}

void Engine::eval_all(std::span<const int32_t> tokens, bool step_by_step, std::vector<float>& out,
                      const Tap& tap, int slot) {
  Impl& m = *impl_;
  collect();
  clear_slot(slot);
  QWEN_CHECK(!tokens.empty(), "eval_all: no tokens");
  QWEN_CHECK(tokens.size() <= size_t(m.n_ctx), "eval_all: ", tokens.size(),
             " tokens exceed n_ctx = ", m.n_ctx);
  for (int32_t id : tokens) m.check_token(id);
  const size_t n_vocab = size_t(this->n_vocab());
  out.resize(tokens.size() * n_vocab);
  const size_t chunk = step_by_step ? 1 : size_t(m.max_out);
  for (size_t b = 0; b < tokens.size(); b += chunk) {
    const int n = int(std::min(chunk, tokens.size() - b));
    m.stage_run(tokens, b, n, slot);
    m.forward(n, n, out.data() + b * n_vocab, nullptr, tap);
    m.slots[slot].insert(m.slots[slot].end(), tokens.begin() + b, tokens.begin() + b + n);
  }
}

void Engine::embed(std::span<const int32_t> tokens, Pooling pooling, int slot, std::vector<float>& out) {
  Impl& m = *impl_;
  QWEN_CHECK(pooling == Pooling::Mean || pooling == Pooling::Cls || pooling == Pooling::Last,
             "embed: pooling '", pooling_name(pooling), "' gives no single vector (mean, cls or last)");
  collect();
  clear_slot(slot);
  QWEN_CHECK(!tokens.empty(), "embed: no tokens");
  QWEN_CHECK(tokens.size() <= size_t(m.n_ctx), "embed: ", tokens.size(), " tokens exceed n_ctx = ", m.n_ctx);
  for (int32_t id : tokens) m.check_token(id);
  const size_t n_embd = size_t(config().n_embd);
  // Every row comes out (mean needs them all; the others pick theirs on the host), into the logit
  // buffer, which holds max_out * n_vocab floats.
  const size_t chunk =
      std::min(size_t(m.max_batch), std::max<size_t>(1, size_t(m.max_out) * size_t(n_vocab()) / n_embd));
  std::vector<double> sum(n_embd, 0.0);
  std::vector<float> rows;
  for (size_t b = 0; b < tokens.size(); b += chunk) {
    const int n = int(std::min(chunk, tokens.size() - b));
    m.stage_run(tokens, b, n, slot);
    m.backend->upload(m.d_ids, m.h_io.data(), size_t(m.h_rows + n - m.h_ids) * sizeof(int32_t));
    m.model->forward(Batch{n, m.d_ids, m.d_pos, m.d_seq, n}, m.kv->layers(), m.d_rows, n, m.d_logits, {},
                     ForwardOutput::Hidden);
    rows.resize(size_t(n) * n_embd);
    m.backend->download(rows.data(), m.d_logits, rows.size() * sizeof(float));
    m.slots[slot].insert(m.slots[slot].end(), tokens.begin() + b, tokens.begin() + b + n);
    for (int t = 0; t < n; ++t) {
      const size_t pos = b + size_t(t);
      const bool take = pooling == Pooling::Mean || (pooling == Pooling::Cls && pos == 0) ||
                        (pooling == Pooling::Last && pos + 1 == tokens.size());
      if (!take) continue;
      for (size_t j = 0; j < n_embd; ++j) sum[j] += rows[size_t(t) * n_embd + j];
    }
  }
  const double scale = pooling == Pooling::Mean ? 1.0 / double(tokens.size()) : 1.0;
  out.resize(n_embd);
  for (size_t j = 0; j < n_embd; ++j) out[j] = float(sum[j] * scale);
}

// ---- Generation ------------------------------------------------------------------------------

struct Generation::State {
  GenerateParams params;
  Sampler sampler;
  OnText on_text;
  StreamDecoder decoder;
  std::vector<int32_t> history;  // prompt + sampled tokens (for penalties)
  std::vector<int32_t> pending;  // prompt tokens not yet fed to a forward
  std::string held;              // decoded text not yet emitted (may start a stop string)
  // The token sampled by the last collect(), already in history and result_.tokens, whose text
  // the next step() produces (and which that step feeds unless it ends the generation).
  std::optional<int32_t> fresh;
  std::unique_ptr<TokenMask> grammar;  // params.grammar's state over the vocabulary

  State(const Tokenizer& tok, const GenerateParams& p, OnText cb)
      : params(p), sampler(p.sampler), on_text(std::move(cb)), decoder(tok) {}
};

Generation::Generation(Engine& engine, int slot, std::vector<int32_t> prompt, const GenerateParams& params,
                       OnText on_text)
    : engine_(engine), slot_(slot) {
  Engine::Impl& m = *engine.impl_;
  QWEN_CHECK(slot >= 0 && slot < m.n_seq, "slot ", slot, " is outside [0, ", m.n_seq, ")");
  QWEN_CHECK(!prompt.empty(), "the prompt is empty");
  QWEN_CHECK(prompt.size() < size_t(m.n_ctx), "the prompt has ", prompt.size(),
             " tokens, which leaves no room in the context of ", m.n_ctx, " tokens");
  for (int32_t id : prompt) m.check_token(id);
  for (const std::string& s : params.stop) QWEN_CHECK(!s.empty(), "empty stop string");
  st_ = std::make_unique<State>(engine.tokenizer(), params, std::move(on_text));
  if (params.grammar) {
    if (!m.token_trie) m.token_trie = std::make_shared<const TokenTrie>(engine.tokenizer());  // built once
    st_->grammar = std::make_unique<TokenMask>(params.grammar, m.token_trie);
  }
  // A step in flight that still feeds this slot (its generation not yet destroyed) finishes
  // first, so that the slot is no longer expected to end with its input.
  if (m.in_flight_on(slot)) engine.collect();
  // Reuse the longest common prefix of what the slot holds; at least the last prompt token is
  // evaluated again so that its logits exist.
  std::vector<int32_t>& held = m.slots[slot];
  size_t keep = std::mismatch(held.begin(), held.end(), prompt.begin(), prompt.end()).first - held.begin();
  keep = std::min(keep, prompt.size() - 1);
  held.resize(keep);
  result_.timing.n_cached = int(keep);
  result_.timing.n_prompt = int(prompt.size() - keep);
  st_->pending.assign(prompt.begin() + keep, prompt.end());
  st_->history = std::move(prompt);
  if (params.max_tokens == 0) result_.finish = FinishReason::Length;
}

Generation::~Generation() {
  engine_.impl_->leave(this);
}

namespace {

// Length of the longest suffix of `text` that is a proper prefix of some stop string.
size_t stop_prefix_suffix(const std::string& text, const std::vector<std::string>& stops) {
  size_t best = 0;
  for (const std::string& s : stops) {
    for (size_t len = std::min(text.size(), s.size() - 1); len > best; --len) {
      if (text.compare(text.size() - len, len, s, 0, len) == 0) {
        best = len;
        break;
      }
    }
  }
  return best;
}

}  // namespace

void Engine::collect() {
  Impl& m = *impl_;
  if (!m.in_flight) return;
  m.in_flight = false;  // nothing stays in flight, even when the read-back throws
  Impl::Launch& l = m.launch;
  const size_t n_vocab = size_t(this->n_vocab());
  const size_t first = l.first_deferred, n_out = l.rows.size() - first;
  m.read_back(int(n_out), l.greedy ? nullptr : l.logits.data() + first * n_vocab,
              l.greedy ? l.top.data() + first : nullptr);
  // Timing: the launch's wall time up to its result on the host. It spans the host work the
  // forward overlapped (the previous tokens' text) and whatever the caller did between the two
  // step() calls, so per step it is about the step's period, which is what a stream sees.
  const double ms = ms_since(l.t0);
  // Each row touches only its own generation's state, so sampled rows run in parallel; the first
  // exception (not a grammar's, which ends only its generation) is rethrown after all ran.
  const auto finish_row = [&](size_t i) {
    const Impl::Launch::Row& row = l.rows[i];
    if (row.gen == nullptr) return;  // left: ended in emit, or destroyed
    Generation& g = *row.gen;
    Generation::State& st = *g.st_;
    Completion& r = g.result_;
    (r.timing.n_gen == 0 ? r.timing.prompt_ms : r.timing.gen_ms) += ms;
    if (!row.samples) {  // still prefilling
      st.pending.erase(st.pending.begin(), st.pending.begin() + ptrdiff_t(row.n_fed));
      return;
    }
    if (row.fresh) {
      QWEN_ASSERT(!st.fresh.has_value());  // emit took it before this token was fed
    } else {
      st.pending.clear();
    }
    const std::span<float> row_logits =
        l.greedy ? std::span<float>() : std::span<float>(l.logits.data() + i * n_vocab, n_vocab);
    // The model's own distribution: read before sample() applies penalties and bias in place.
    std::vector<float> raw;
    if (st.params.logprobs >= 0) raw.assign(row_logits.begin(), row_logits.end());
    int32_t tok;
    try {
      if (st.grammar) st.grammar->apply(row_logits);
      tok = l.greedy ? l.top[i] : st.sampler.sample(row_logits, st.history);
      if (st.grammar) st.grammar->accept(tok);
    } catch (const Error& e) {
      if (!st.grammar) throw;
      // The grammar is this generation's own: it ends alone (nothing fresh to feed or emit).
      r.error = e.what();
      r.finish = FinishReason::Cancelled;
      return;
    }
    if (st.params.logprobs >= 0) r.logprobs.push_back(token_logprobs(raw, tok, st.params.logprobs));
    st.history.push_back(tok);
    r.tokens.push_back(tok);
    ++r.timing.n_gen;
    st.fresh = tok;
  };
  const auto finish_rows = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) finish_row(size_t(i));
  };
  // Greedy rows only read their argmax: waking the pool would cost more than they do.
  if (l.greedy) {
    finish_rows(0, int64_t(l.rows.size()));
  } else {
    m.row_pool.parallel_for(int64_t(l.rows.size()), finish_rows);
  }
}

void Engine::step(std::span<Generation* const> gens, int prompt_budget) {
  Impl& m = *impl_;
  for (Generation* g : gens) QWEN_CHECK(&g->engine_ == this, "step: a generation of another engine");
  QWEN_CHECK(prompt_budget >= 0, "step: prompt budget ", prompt_budget, " must not be negative");

  // 1. Collect: the forward of the previous step(), if it is still in flight.
  collect();

  // 2. Launch. What a fresh token ends by token-level rules (checked in the order of emit below)
  // is known before its text: such a generation is not fed again.
  std::vector<FinishReason> ends(gens.size(), FinishReason::Running);
  std::vector<Input> inputs;
  std::vector<int32_t> fed;  // the fresh tokens fed (stable storage for the inputs' spans)
  fed.reserve(gens.size());
  std::vector<size_t> prefilling;  // indices into gens of generations with prompt tokens left
  Impl::Launch& l = m.launch;
  l.rows.clear();
  l.greedy = true;
  auto add_row = [&](Generation& g, Impl::Launch::Row row) {
    l.rows.push_back(row);
    const Generation::State& st = *g.st_;
    // When every generation that samples from this forward is plain greedy and wants no logprobs
    // or grammar, only the argmax of each row leaves the backend.
    l.greedy &= !row.samples || (st.params.sampler.is_argmax() && st.params.logprobs < 0 && !st.grammar);
  };
  for (size_t k = 0; k < gens.size(); ++k) {
    Generation& g = *gens[k];
    if (g.done()) continue;
    Generation::State& st = *g.st_;
    if (!st.fresh) {
      QWEN_ASSERT(!st.pending.empty());  // each running generation has a fresh token or prompt left
      prefilling.push_back(k);
      continue;
    }
    const int32_t tok = *st.fresh;
    if (!st.params.ignore_eog && tokenizer().is_eog(tok)) {
      ends[k] = FinishReason::Eog;
    } else if (st.params.max_tokens >= 0 && g.result_.timing.n_gen >= st.params.max_tokens) {
      ends[k] = FinishReason::Length;
    } else if (m.slots[g.slot_].size() + 1 > size_t(m.n_ctx)) {
      ends[k] = FinishReason::ContextFull;
    }
    if (ends[k] != FinishReason::Running) continue;
    fed.push_back(tok);
    inputs.push_back({g.slot_, std::span<const int32_t>(&fed.back(), 1)});
    add_row(g, {&g, g.slot_, 1, /*samples=*/true, /*fresh=*/true, 0});
  }
  // Prompt tokens share the step's budget, so a long prompt adds at most one chunk's compute to
  // the other generations' step instead of all of it. The budget also stays within max_batch
  // with the decode tokens (one forward call), but is never zero: prompts always progress. The
  // shortest prompt left goes first: a short request gets its first token after one forward even
  // while a long prompt is being prefilled, and the long one still gets what the short ones leave.
  const size_t n_decode = inputs.size(), max_batch = size_t(m.max_batch);
  const size_t room = n_decode < max_batch ? max_batch - n_decode : 1;
  size_t budget = std::min(prompt_budget > 0 ? size_t(prompt_budget) : max_batch, room);
  std::stable_sort(prefilling.begin(), prefilling.end(), [&](size_t a, size_t b) {
    return gens[a]->st_->pending.size() < gens[b]->st_->pending.size();
  });
  for (size_t k : prefilling) {
    if (budget == 0) break;
    Generation& g = *gens[k];
    const std::span<const int32_t> pending = g.st_->pending;
    const size_t n = std::min(pending.size(), budget);
    budget -= n;
    inputs.push_back({g.slot_, pending.first(n)});
    add_row(g, {&g, g.slot_, n, /*samples=*/n == pending.size(), /*fresh=*/false, 0});
  }
  if (!inputs.empty()) {
    l.t0 = Clock::now();
    l.top.resize(inputs.size());
    if (!l.greedy) l.logits.reserve(*m.backend, inputs.size() * size_t(n_vocab()));
    // Upload, forward (or graph replay) and argmax are queued; nothing waits for them here.
    run(inputs, l.greedy ? nullptr : l.logits.data(), l.greedy ? l.top.data() : nullptr, &l.first_deferred);
    for (Impl::Launch::Row& row : l.rows) row.slot_len = m.slots[row.slot].size();
    m.in_flight = true;
  }

  // 3. Emit: the fresh tokens' text, while the backend computes the forward just launched.
  try {
    for (size_t k = 0; k < gens.size(); ++k) {
      Generation& g = *gens[k];
      Generation::State& st = *g.st_;
      if (!st.fresh) continue;
      const int32_t tok = *st.fresh;
      st.fresh.reset();
      Completion& r = g.result_;

      auto emit = [&](std::string_view text) {
        if (text.empty()) return;
        r.text += text;
        if (st.on_text && !st.on_text(text)) r.finish = FinishReason::Cancelled;
      };
      auto finish = [&](FinishReason why) {  // flushes everything still held back
        st.held += st.decoder.flush();
        emit(st.held);
        st.held.clear();
        if (r.finish == FinishReason::Running) r.finish = why;
      };

      if (ends[k] == FinishReason::Eog) {
        finish(FinishReason::Eog);
        continue;
      }
      st.held += st.decoder.push(tok);
      size_t stop_at = std::string::npos;
      for (const std::string& s : st.params.stop) stop_at = std::min(stop_at, st.held.find(s));
      if (stop_at != std::string::npos) {
        emit(std::string_view(st.held).substr(0, stop_at));
        st.held.clear();
        if (r.finish == FinishReason::Running) r.finish = FinishReason::Stop;
      } else {
        const size_t keep = stop_prefix_suffix(st.held, st.params.stop);
        emit(std::string_view(st.held).substr(0, st.held.size() - keep));
        st.held.erase(0, st.held.size() - keep);
        if (r.finish == FinishReason::Running && ends[k] != FinishReason::Running) finish(ends[k]);
      }
      // Ended by its text (stop string, cancelled): the token it was fed in phase 2 goes again.
      if (g.done()) m.leave(&g);
    }
  } catch (...) {
    // An OnText callback threw: the generations not reached keep their fresh token (produced by
    // a later step) but leave the launch, so that it is not fed twice.
    for (Generation* g : gens) {
      if (g->st_->fresh) m.leave(g);
    }
    throw;
  }
}

// ---- Session ---------------------------------------------------------------------------------

Completion Session::generate(std::vector<int32_t> prompt, const GenerateParams& params,
                             const OnText& on_text) {
  Generation g(engine_, slot_, std::move(prompt), params, on_text);
  Generation* gp = &g;
  while (!g.done()) engine_.step(std::span<Generation* const>(&gp, 1));
  return g.result();
}

Completion Session::generate(std::string_view prompt_text, const GenerateParams& params,
                             const OnText& on_text) {
  return generate(engine_.tokenizer().encode(prompt_text, /*parse_special=*/true, /*add_special=*/true),
                  params, on_text);
}

}  // namespace qwen
