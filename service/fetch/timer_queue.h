#ifndef BATCHFETCH_SERVICE_FETCH_TIMER_QUEUE_H_
#define BATCHFETCH_SERVICE_FETCH_TIMER_QUEUE_H_

#include <functional>
#include <queue>
#include <utility>
#include <vector>

#include "service/base/clock.h"

namespace batchfetch {

// Things due at a monotonic time, earliest first; equal times come out in
// the order they were pushed. Not thread-safe.
template <typename T>
class TimerQueue {
 public:
  void Push(MonoTime at, T value) {
    heap_.push(Entry{at, next_seq_++, std::move(value)});
  }
  bool empty() const { return heap_.empty(); }
  size_t size() const { return heap_.size(); }
  // REQUIRES: !empty().
  MonoTime next_at() const { return heap_.top().at; }

  // Moves every entry due at or before `now` to `out`, in order.
  void PopDue(MonoTime now, std::vector<T>* out) {
    while (!heap_.empty() && heap_.top().at <= now) {
      // priority_queue::top is const; the entry is popped right after.
      out->push_back(std::move(const_cast<Entry&>(heap_.top()).value));
      heap_.pop();
    }
  }

 private:
  struct Entry {
    MonoTime at;
    uint64_t seq;
    T value;
    bool operator>(const Entry& other) const {
      return at != other.at ? at > other.at : seq > other.seq;
    }
  };
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap_;
  uint64_t next_seq_ = 0;
};

}  // namespace batchfetch

#endif  // BATCHFETCH_SERVICE_FETCH_TIMER_QUEUE_H_
