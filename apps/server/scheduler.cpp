#include "scheduler.h"

#include <algorithm>
#include <cstdio>
#include <exception>

#include "model/model.h"
#include "util/check.h"

namespace qwen::server {

Job::Job(std::vector<int32_t> prompt, GenerateParams params, std::string scope, std::optional<Pooling> embed)
    : prompt_(std::move(prompt)), params_(std::move(params)), scope_(std::move(scope)), embed_(embed) {}

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
      cv_.wait(lk, [&] { return stop_ || !running_.empty() || !queue_.empty(); });
      if (stop_) return;
      while (!queue_.empty() && int(running_.size() + admitted.size()) < n_slots_) {
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
    if (running_.empty()) continue;

    gens.clear();
    depths.clear();
    for (Running& r : running_) {
      gens.push_back(r.gen.get());
      depths.push_back(int64_t(engine_.slot_tokens(r.gen->slot()).size()));
    }
    auto t0 = std::chrono::steady_clock::now();
    try {
      engine_.step(gens, prefill_chunk_);
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
    metrics_.active++;
    const int slot = pick_slot(*job);
    if (job->embed()) {
      embed(*job, slot);
    } else {
      start(std::move(job), slot);
    }
  }
}

void Scheduler::embed(Job& job, int slot) {
  const auto t0 = std::chrono::steady_clock::now();
  JobResult res{.prompt_tokens = int(job.prompt().size())};
  try {
    engine_.embed(job.prompt(), *job.embed(), slot, res.embedding);
    metrics_.prompt_tokens += job.prompt().size();
    metrics_.completions++;
  } catch (const std::exception& e) {
    engine_.clear_slot(slot);  // its contents are unknown after a failed forward
    res.error = str("embedding failed: ", e.what());
  }
  metrics_.prompt_us += uint64_t(
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count());
  metrics_.active--;
  job.finish(std::move(res));
}

void Scheduler::start(std::shared_ptr<Job> job, int slot) {
  try {
    auto on_text = [j = job.get()](std::string_view piece) { return j->on_text(piece); };
    auto gen = std::make_unique<Generation>(engine_, slot, job->prompt(), job->params(), on_text);
    running_.push_back({std::move(job), std::move(gen)});
  } catch (const std::exception& e) {
    metrics_.active--;
    job->finish({.prompt_tokens = int(job->prompt().size()), .error = e.what()});
  }
}

int Scheduler::pick_slot(const Job& job) {
  const std::vector<int32_t>& prompt = job.prompt();
  int best = -1;
  size_t best_len = 0;
  for (int s = 0; s < n_slots_; ++s) {
    const bool busy =
        std::any_of(running_.begin(), running_.end(), [&](const Running& r) { return r.gen->slot() == s; });
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
  res.cached_tokens = c.timing.n_cached;
  res.logprobs = c.logprobs;
  res.error = c.error;  // a generation that failed alone (its grammar)
  metrics_.prompt_tokens += uint64_t(c.timing.n_prompt);
  metrics_.cached_tokens += uint64_t(c.timing.n_cached);
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
}

}  // namespace qwen::server
