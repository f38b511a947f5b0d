#include "metrics.h"

#include <sstream>

namespace qwen::server {

namespace {

void emit(std::ostringstream& os, const char* name, const char* type, const char* help, double value) {
  os << "# HELP " << name << ' ' << help << '\n'
     << "# TYPE " << name << ' ' << type << '\n'
     << name << ' ' << value << '\n';
}

}  // namespace

std::string Metrics::render(int n_slots) const {
  std::ostringstream os;
  os.precision(10);
  const double gen_s = generation_us.load() * 1e-6;
  const double prompt_s = prompt_us.load() * 1e-6;
  emit(os, "qwen_requests_total", "counter", "HTTP requests received on every route.",
       double(requests.load()));
  emit(os, "qwen_request_errors_total", "counter", "HTTP responses with status >= 400.",
       double(errors.load()));
  emit(os, "qwen_completions_total", "counter", "Generations finished with stop or length.",
       double(completions.load()));
  emit(os, "qwen_cancelled_total", "counter", "Generations cancelled because the client disconnected.",
       double(cancelled.load()));
  emit(os, "qwen_prompt_tokens_total", "counter", "Prompt tokens evaluated (cached prefixes excluded).",
       double(prompt_tokens.load()));
  emit(os, "qwen_cached_prompt_tokens_total", "counter", "Prompt tokens reused from a slot's KV cache.",
       double(cached_tokens.load()));
  emit(os, "qwen_generated_tokens_total", "counter", "Tokens sampled.", double(generated_tokens.load()));
  emit(os, "qwen_prompt_seconds_total", "counter", "Prefill wall time summed over generations.", prompt_s);
  emit(os, "qwen_generation_seconds_total", "counter", "Wall time the scheduler spent in batched steps.",
       gen_s);
  emit(os, "qwen_prompt_tokens_per_second", "gauge", "Prompt tokens per second of prefill time, since start.",
       prompt_s > 0 ? double(prompt_tokens.load()) / prompt_s : 0.0);
  emit(os, "qwen_generated_tokens_per_second", "gauge",
       "Aggregate tokens sampled per second of batched-step time, since start.",
       gen_s > 0 ? double(generated_tokens.load()) / gen_s : 0.0);
  emit(os, "qwen_decode_bytes_total", "counter",
       "Bytes the batched steps read and wrote: weights once a step, each stream's KV cache "
       "(Model::decode_bytes).",
       double(decode_bytes.load()));
  emit(os, "qwen_decode_gigabytes_per_second", "gauge",
       "Effective memory bandwidth of the batched steps (decode bytes over their time), since start.",
       gen_s > 0 ? double(decode_bytes.load()) / gen_s * 1e-9 : 0.0);
  emit(os, "qwen_requests_active", "gauge", "Generations holding a slot.", double(active.load()));
  emit(os, "qwen_requests_queued", "gauge", "Generations waiting for a free slot.", double(queued.load()));
  emit(os, "qwen_slots", "gauge", "Parallel slots (KV cache sequences).", double(n_slots));
  return os.str();
}

}  // namespace qwen::server
