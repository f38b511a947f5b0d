// include/qwen/qwen.h over the runtime: a Model is an Engine with one slot and a Session on it.
#include <qwen/qwen.h>

#include "backend/backend.h"
#include "runtime/session.h"
#include "tokenizer/tokenizer.h"
#include "util/check.h"

namespace qwen::api {

struct Model::Impl {
  std::unique_ptr<Engine> engine;
  std::unique_ptr<Session> session;
};

Model::Model() = default;
Model::~Model() = default;

std::unique_ptr<Model> Model::load(const LoadOptions& o) {
  QWEN_CHECK(!o.model_path.empty(), "LoadOptions.model_path: no model file given");
  QWEN_CHECK(o.n_threads >= 0, "LoadOptions.n_threads = ", o.n_threads, " must not be negative");
  EngineOptions eo;
  eo.model_path = o.model_path;
  eo.device = o.device;
  eo.n_threads = o.n_threads;
  eo.n_ctx = o.n_ctx;
  eo.exact = o.exact;
  std::unique_ptr<Engine> engine = Engine::load(eo);
  std::unique_ptr<Model> m(new Model());
  m->impl_ = std::make_unique<Impl>();
  m->impl_->session = std::make_unique<Session>(*engine);
  m->impl_->engine = std::move(engine);
  return m;
}

std::vector<int32_t> Model::tokenize(std::string_view text, bool add_special) const {
  return impl_->engine->tokenizer().encode(text, /*parse_special=*/true, add_special);
}

std::string Model::detokenize(const std::vector<int32_t>& tokens) const {
  return impl_->engine->tokenizer().decode(tokens);
}

std::string Model::chat_prompt(const std::vector<ChatMessage>& messages) const {
  std::vector<qwen::ChatMessage> m;
  for (const ChatMessage& x : messages) m.push_back({x.role, x.content});
  // Recognised per call, so that a model without a (known) template still loads and generates.
  return ChatTemplate::for_tokenizer(impl_->engine->tokenizer()).render(m, /*add_generation_prompt=*/true);
}

Result Model::generate(std::string_view prompt, const GenerateOptions& options,
                       const StreamCallback& on_text) {
  return generate(tokenize(prompt), options, on_text);
}

Result Model::chat(const std::vector<ChatMessage>& messages, const GenerateOptions& options,
                   const StreamCallback& on_text) {
  return generate(tokenize(chat_prompt(messages), /*add_special=*/false), options, on_text);
}

Result Model::generate(const std::vector<int32_t>& prompt_tokens, const GenerateOptions& o,
                       const StreamCallback& on_text) {
  GenerateParams p;
  p.max_tokens = o.max_tokens;
  p.stop = o.stop;
  p.sampler.temperature = o.sampling.temperature;
  p.sampler.top_k = o.sampling.top_k;
  p.sampler.top_p = o.sampling.top_p;
  p.sampler.min_p = o.sampling.min_p;
  p.sampler.repeat_penalty = o.sampling.repeat_penalty;
  p.sampler.seed = o.sampling.seed;
  const Completion c = impl_->session->generate(prompt_tokens, p, on_text);
  Result r;
  r.text = c.text;
  r.tokens = c.tokens;
  r.finish_reason = finish_reason_name(c.finish);
  r.n_prompt_tokens = c.timing.n_prompt;
  r.prompt_tokens_per_s = c.timing.prompt_tok_s();
  r.gen_tokens_per_s = c.timing.gen_tok_s();
  return r;
}

std::string Model::backend_name() const {
  return impl_->engine->backend().name();
}
int Model::n_ctx() const {
  return impl_->engine->n_ctx();
}
int Model::n_vocab() const {
  return impl_->engine->n_vocab();
}

}  // namespace qwen::api
