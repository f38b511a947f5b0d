#include "scheduler.h"

#include <algorithm>
#include <cstdio>
#include <exception>

#include "model/model.h"
#include "util/check.h"

namespace qwen::server {

Job::Job(std::vector<int32_t> prompt, GenerateParams params, std::string scope)
    : prompt_(std::move(prompt)), params_(std::move(params)), scope_(std::move(scope)) {}

Job::Update Job::wait(std::chrono::milliseconds timeout) {
  std::unique_lock lk(mu_);
  cv_.wait_for(lk, timeout, [&] { return !pending_.empty() || done_; });
  Update u;
  u.text = std::move(pending_);
  pending_.clear();
  u.done = done_;
  if (done_) u.result = result_;
  return u;
}

bool Job::on_text(std::string_view piece) {
  bool was_empty;
  {
    std::lock_guard lk(mu_);
    was_empty = pending_.empty();
    pending_.append(piece);
  }
  // wait() sleeps only while pending_ is empty, so only the first piece of a batch needs to wake
  // it: one notification per read instead of one per token when the reader falls behind.
  if (was_empty) cv_.notify_all();
  return !cancelled();
}

void Job::finish(JobResult result) {
  {
    std::lock_guard lk(mu_);
    result_ = std::move(result);
    done_ = true;
  }
  cv_.notify_all();
}

Scheduler::Scheduler(Engine& engine, Metrics& metrics, int prefill_chunk)
    : engine_(engine),
      metrics_(metrics),
      n_slots_(engine.n_seq()),
      prefill_chunk_(prefill_chunk),
      slot_scope_(size_t(engine.n_seq())) {
  QWEN_CHECK(prefill_chunk >= 1, "prefill chunk ", prefill_chunk, " must be >= 1");
  thread_ = std::thread([this] { run(); });
}

Scheduler::~Scheduler() {
  shutdown();
}

void Scheduler::shutdown() {
  {
    std::lock_guard lk(mu_);
    if (stop_) return;
    stop_ = true;
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
  const JobResult stopping{.error = "the server is shutting down", .shutting_down = true};
  fail_running(stopping);
  std::lock_guard lk(mu_);
  for (auto& job : queue_) job->finish(stopping);
  queue_.clear();
  metrics_.queued = 0;
}

void Scheduler::submit(std::shared_ptr<Job> job) {
  {
    std::lock_guard lk(mu_);
    if (!stop_) {
      queue_.push_back(std::move(job));
      metrics_.queued = int(queue_.size());
      job = nullptr;
    }
  }
  if (job) {
    job->finish({.error = "the server is shutting down", .shutting_down = true});
    return;
  }
  cv_.notify_all();
}

void Scheduler::run() {
  std::vector<std::shared_ptr<Job>> admitted;
  std::vector<Generation*> gens;
  std::vector<int64_t> depths;  // each stream's cached positions at the step (for decode_bytes)
  for (;;) {
    admitted.clear();
    {
      std::unique_lock lk(mu_);
      // Sleep only when there is nothing to step and nothing that could start.
      cv_.wait(lk, [&] { return stop_ || !running_.empty() || !prefilling_.empty() || !queue_.empty(); });
      if (stop_) return;
      while (!queue_.empty() && int(running_.size() + prefilling_.size() + admitted.size()) < n_slots_) {
        admitted.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      metrics_.queued = int(queue_.size());
    }
    admit(admitted);

    // A cancelled job leaves before the step, so its slot is free for the next one at once.
    for (Running& r : running_) {
      if (r.job->cancelled()) retire(r);
    }
    std::erase_if(running_, [](const Running& r) { return r.job == nullptr; });
    feed_prefills();
    if (running_.empty()) continue;

    gens.clear();
    depths.clear();
    for (Running& r : running_) {
      gens.push_back(r.gen.get());
      depths.push_back(int64_t(engine_.slot_tokens(r.gen->slot()).size()));
    }
    auto t0 = std::chrono::steady_clock::now();
    try {
      engine_.step(gens);
    } catch (const std::exception& e) {
      // A failed forward leaves the engine's state unknown: end every job that holds a slot.
      std::fprintf(stderr, "qwen-server: step failed: %s\n", e.what());
      fail_running({.error = str("generation failed: ", e.what())});
      continue;
    }
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
    metrics_.generation_us += uint64_t(us.count());
    metrics_.decode_bytes += engine_.model().decode_bytes(depths, engine_.kv_type());

    for (Running& r : running_) {
      if (r.gen->done()) retire(r);
    }
    std::erase_if(running_, [](const Running& r) { return r.job == nullptr; });
  }
}

void Scheduler::admit(std::vector<std::shared_ptr<Job>>& admitted) {
  for (std::shared_ptr<Job>& job : admitted) {
    if (job->cancelled()) {
      metrics_.cancelled++;
      job->finish({.finish = FinishReason::Cancelled, .prompt_tokens = int(job->prompt().size())});
      continue;
    }
    const std::vector<int32_t>& prompt = job->prompt();
    const int slot = pick_slot(*job);
    const std::vector<int32_t>& cached = engine_.slot_tokens(slot);
    // The engine keeps the common prefix (at most all but the last prompt token) and evaluates
    // the rest: the part a chunked prefill spreads over several iterations when it is long.
    size_t keep = size_t(std::mismatch(cached.begin(), cached.end(), prompt.begin(), prompt.end()).first -
                         cached.begin());
    keep = std::min(keep, prompt.size() - 1);
    metrics_.active++;
    if (prompt.size() - keep <= size_t(prefill_chunk_)) {
      start(std::move(job), slot, 0);
      continue;
    }
    // Engine::eval appends at the slot's end, so a cached tail past the common prefix must go;
    // the only way to drop it is to forget the slot (its prefix is then evaluated again).
    if (cached.size() > keep) {
      engine_.clear_slot(slot);
      keep = 0;
    }
    prefilling_.push_back({std::move(job), slot, keep, 0});
  }
}

void Scheduler::start(std::shared_ptr<Job> job, int slot, int fed) {
  try {
    auto on_text = [j = job.get()](std::string_view piece) { return j->on_text(piece); };
    auto gen = std::make_unique<Generation>(engine_, slot, job->prompt(), job->params(), on_text);
    running_.push_back({std::move(job), std::move(gen), fed});
  } catch (const std::exception& e) {
    metrics_.active--;
    job->finish({.prompt_tokens = int(job->prompt().size()), .error = e.what()});
  }
}

void Scheduler::feed_prefills() {
  for (Prefill& p : prefilling_) {
    if (!p.job->cancelled()) continue;
    metrics_.cancelled++;
    metrics_.active--;
    p.job->finish({.finish = FinishReason::Cancelled, .prompt_tokens = int(p.job->prompt().size())});
    p.job.reset();
  }
  std::erase_if(prefilling_, [](const Prefill& p) { return p.job == nullptr; });
  if (prefilling_.empty()) return;

  // Oldest first, prefill_chunk tokens in all, each job up to (not including) its last token.
  std::vector<Engine::Input> inputs;
  std::vector<size_t> fed(prefilling_.size(), 0);
  size_t budget = size_t(prefill_chunk_);
  for (size_t i = 0; i < prefilling_.size() && budget > 0; ++i) {
    const Prefill& p = prefilling_[i];
    const std::vector<int32_t>& prompt = p.job->prompt();
    fed[i] = std::min(budget, prompt.size() - 1 - p.in_slot);
    budget -= fed[i];
    inputs.push_back({p.slot, std::span<const int32_t>(prompt.data() + p.in_slot, fed[i])});
  }
  const auto t0 = std::chrono::steady_clock::now();
  try {
    engine_.prefill(inputs);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qwen-server: prefill failed: %s\n", e.what());
    fail_running({.error = str("prefill failed: ", e.what())});
    return;
  }
  const auto us =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0);
  metrics_.prompt_us += uint64_t(us.count());

  for (size_t i = 0; i < prefilling_.size(); ++i) {
    Prefill& p = prefilling_[i];
    p.in_slot += fed[i];
    p.fed += int(fed[i]);
    metrics_.prompt_tokens += fed[i];
    if (p.in_slot + 1 == p.job->prompt().size()) {
      start(std::move(p.job), p.slot, p.fed);  // joins the next step with its last prompt token
      p.job = nullptr;
    }
  }
  std::erase_if(prefilling_, [](const Prefill& p) { return p.job == nullptr; });
}

int Scheduler::pick_slot(const Job& job) {
  const std::vector<int32_t>& prompt = job.prompt();
  int best = -1;
  size_t best_len = 0;
  for (int s = 0; s < n_slots_; ++s) {
    const bool busy =
        std::any_of(running_.begin(), running_.end(), [&](const Running& r) { return r.gen->slot() == s; }) ||
        std::any_of(prefilling_.begin(), prefilling_.end(), [&](const Prefill& p) { return p.slot == s; });
    if (busy) continue;
    size_t len = 0;
    if (slot_scope_[size_t(s)] == job.scope()) {
      const std::vector<int32_t>& cached = engine_.slot_tokens(s);
      len = size_t(std::mismatch(cached.begin(), cached.end(), prompt.begin(), prompt.end()).first -
                   cached.begin());
    }
    // Lowest index on ties, except that with nothing to reuse an empty slot is taken first, so
    // that other prompts stay cached.
    const bool better =
        best < 0 || len > best_len ||
        (len == 0 && best_len == 0 && !engine_.slot_tokens(best).empty() && engine_.slot_tokens(s).empty());
    if (better) {
      best = s;
      best_len = len;
    }
  }
  QWEN_ASSERT(best >= 0);
  if (slot_scope_[size_t(best)] != job.scope()) {
    engine_.clear_slot(best);
    slot_scope_[size_t(best)] = job.scope();
  }
  return best;
}

// Ends a running job: reports its result and counts it. Leaves r.job null for removal.
void Scheduler::retire(Running& r) {
  const Completion& c = r.gen->result();
  JobResult res;
  res.finish = r.job->cancelled() ? FinishReason::Cancelled : c.finish;
  res.prompt_tokens = int(r.job->prompt().size());
  res.completion_tokens = int(c.tokens.size());
  res.cached_tokens = c.timing.n_cached - r.fed;  // fed chunks were evaluated, not reused
  res.logprobs = c.logprobs;
  metrics_.prompt_tokens += uint64_t(c.timing.n_prompt);
  metrics_.cached_tokens += uint64_t(c.timing.n_cached - r.fed);  // fed chunks count as prompt
  metrics_.generated_tokens += uint64_t(c.tokens.size());
  metrics_.prompt_us += uint64_t(c.timing.prompt_ms * 1000.0);
  if (res.finish == FinishReason::Cancelled) {
    metrics_.cancelled++;
  } else {
    metrics_.completions++;
  }
  // Counted out before the client can see its result, so a client reading /metrics right after
  // its response never finds itself still active.
  metrics_.active--;
  r.job->finish(std::move(res));
  r.gen.reset();
  r.job.reset();
}

void Scheduler::fail_running(const JobResult& failure) {
  for (Running& r : running_) {
    engine_.clear_slot(r.gen->slot());  // its KV contents are unknown after a failed step
    JobResult res = failure;
    res.prompt_tokens = int(r.job->prompt().size());
    metrics_.active--;
    r.job->finish(std::move(res));
  }
  running_.clear();
  for (Prefill& p : prefilling_) {
    engine_.clear_slot(p.slot);
    JobResult res = failure;
    res.prompt_tokens = int(p.job->prompt().size());
    metrics_.active--;
    p.job->finish(std::move(res));
  }
  prefilling_.clear();
}

}  // namespace qwen::server
