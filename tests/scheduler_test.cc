// The scheduler's order and bounds, with times given by hand: no clock, no
// curl, no sleeps.
#include "service/fetch/scheduler.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "service/fetch/host_governor.h"
#include "service/fetch/timer_queue.h"

namespace batchfetch {
namespace {

using Kind = Scheduler::Decision::Kind;
const MonoTime kT0 = MonoTime() + absl::Hours(1);

std::vector<FetchSpec> Specs(const std::vector<std::string>& urls,
                             uint32_t first_index = 0) {
  std::vector<FetchSpec> specs(urls.size());
  for (size_t i = 0; i < urls.size(); ++i) {
    specs[i].index = first_index + static_cast<uint32_t>(i);
    specs[i].url = urls[i];
  }
  return specs;
}

BatchLimits Limits(int concurrency, int window = 0) {
  BatchLimits limits;
  limits.concurrency = concurrency;
  limits.window = window == 0 ? 2 * concurrency : window;
  return limits;
}

class SchedulerTest : public ::testing::Test {
 protected:
  Scheduler::Batch* Add(uint64_t key, std::vector<FetchSpec> specs,
                        BatchLimits limits) {
    windows_[key] = std::make_shared<BatchWindow>();
    return scheduler_.Add(key, std::move(specs), limits, windows_[key], kT0);
  }
  std::vector<Scheduler::Decision> Admit(int free_slots, MonoTime now = kT0) {
    std::vector<Scheduler::Decision> out;
    scheduler_.Admit(now, free_slots, &out);
    return out;
  }
  // "key:url" of each start, in order.
  std::vector<std::string> Started(const std::vector<Scheduler::Decision>& d) {
    std::vector<std::string> out;
    for (const auto& decision : d) {
      EXPECT_EQ(decision.kind, Kind::kStart);
      out.push_back(
          absl::StrCat(scheduler_.key(decision.batch), ":",
                       scheduler_.spec(decision.batch, decision.pos).url));
    }
    return out;
  }
  // Ends the attempt and delivers it, as the engine does.
  void Finish(const Scheduler::Decision& d) {
    scheduler_.AttemptEnded(d.batch, d.pos);
    scheduler_.Delivered(d.batch, d.pos);
  }

  HostGovernor hosts_;
  Scheduler scheduler_{&hosts_};
  std::map<uint64_t, std::shared_ptr<BatchWindow>> windows_;
};

TEST_F(SchedulerTest, BatchesTakeTurnsForFreeSlots) {
  Add(1, Specs({"http://a/1", "http://a/2", "http://a/3"}), Limits(10));
  Add(2, Specs({"http://b/1", "http://b/2"}), Limits(10));
  EXPECT_EQ(Started(Admit(4)),
            (std::vector<std::string>{"1:http://a/1", "2:http://b/1",
                                      "1:http://a/2", "2:http://b/2"}));
}

TEST_F(SchedulerTest, HostsOfABatchTakeTurns) {
  // Host a's requests are queued behind its per-host cap; when the cap
  // frees, hosts a and b alternate.
  BatchLimits limits = Limits(10);
  limits.per_host_concurrency = 1;
  Add(1,
      Specs({"http://a/1", "http://a/2", "http://a/3", "http://b/1",
             "http://b/2"}),
      limits);
  auto first = Admit(10);
  EXPECT_EQ(Started(first),
            (std::vector<std::string>{"1:http://a/1", "1:http://b/1"}));
  for (const auto& d : first) Finish(d);
  // One from each host per round (the cursor carries on where it was),
  // never two from a while b waits.
  auto second = Admit(10);
  EXPECT_EQ(Started(second),
            (std::vector<std::string>{"1:http://b/2", "1:http://a/2"}));
  for (const auto& d : second) Finish(d);
  EXPECT_EQ(Started(Admit(10)), (std::vector<std::string>{"1:http://a/3"}));
}

TEST_F(SchedulerTest, BatchConcurrencyCapsStarts) {
  Add(1, Specs({"http://a/1", "http://a/2", "http://a/3"}), Limits(2));
  auto first = Admit(100);
  EXPECT_EQ(first.size(), 2u);
  EXPECT_TRUE(Admit(100).empty());
  Finish(first[0]);
  EXPECT_EQ(Started(Admit(100)), (std::vector<std::string>{"1:http://a/3"}));
}

TEST_F(SchedulerTest, EngineWideSlotsCapStarts) {
  Add(1, Specs({"http://a/1", "http://a/2", "http://a/3"}), Limits(10));
  EXPECT_EQ(Admit(1).size(), 1u);
  EXPECT_EQ(Admit(0).size(), 0u);
}

TEST_F(SchedulerTest, UnreleasedResultsHoldTheWindowShut) {
  Add(1, Specs({"http://a/1", "http://a/2", "http://a/3", "http://a/4"}),
      Limits(2, /*window=*/2));
  auto first = Admit(10);
  ASSERT_EQ(first.size(), 2u);
  Finish(first[0]);
  Finish(first[1]);
  // Two delivered, none released: the window (2) is full.
  EXPECT_TRUE(Admit(10).empty());
  EXPECT_TRUE(windows_[1]->stalled.load());
  windows_[1]->backlog.fetch_sub(1);  // the consumer releases one
  EXPECT_EQ(Admit(10).size(), 1u);
}

TEST_F(SchedulerTest, AnswersWithoutIoStillRespectTheWindow) {
  // A batch of bad URLs is answered a window at a time, not all at once:
  // undelivered answers hold window room like transfers in flight.
  std::vector<std::string> urls(100, "ftp://a/");
  Add(1, Specs(urls), Limits(2, /*window=*/4));
  auto first = Admit(100);
  EXPECT_EQ(first.size(), 4u);
  for (const auto& d : first) EXPECT_EQ(d.kind, Kind::kInvalid);
  EXPECT_TRUE(Admit(100).empty());
  for (const auto& d : first) scheduler_.Delivered(d.batch, d.pos);
  EXPECT_TRUE(Admit(100).empty());  // delivered, not yet released
  windows_[1]->backlog.fetch_sub(4);
  EXPECT_EQ(Admit(100).size(), 4u);
}

TEST_F(SchedulerTest, InvalidRequestsAreAnsweredWithoutASlot) {
  Add(1, Specs({"ftp://a/1", "http://a/2"}), Limits(1));
  auto d = Admit(1);
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].kind, Kind::kInvalid);
  EXPECT_NE(d[0].why.find("scheme 'ftp'"), std::string::npos);
  EXPECT_EQ(d[1].kind, Kind::kStart);
}

TEST_F(SchedulerTest, NoStartTooCloseToTheDeadline) {
  BatchLimits limits = Limits(4);
  limits.deadline = kT0 + absl::Milliseconds(5);
  Add(1, Specs({"http://a/1"}), limits);
  auto d = Admit(4);
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].kind, Kind::kOutOfTime);
}

TEST_F(SchedulerTest, DeadlineTimerEndsEverythingNotRunning) {
  BatchLimits limits = Limits(1);
  limits.deadline = kT0 + absl::Seconds(1);
  Add(1, Specs({"http://a/1", "http://a/2", "http://a/3"}), limits);
  ASSERT_EQ(Admit(1).size(), 1u);
  EXPECT_EQ(scheduler_.NextTimer(), kT0 + absl::Seconds(1));
  std::vector<Scheduler::Decision> out;
  scheduler_.RunTimers(kT0 + absl::Milliseconds(999), &out);
  EXPECT_TRUE(out.empty());
  scheduler_.RunTimers(kT0 + absl::Seconds(1), &out);
  ASSERT_EQ(out.size(), 2u);  // the running one ends by its own timeout
  EXPECT_EQ(out[0].kind, Kind::kOutOfTime);
  EXPECT_EQ(out[1].kind, Kind::kOutOfTime);
}

TEST_F(SchedulerTest, EndAtDeadlineCutsRunningTransfers) {
  Add(1, Specs({"http://a/1", "http://a/2"}), Limits(1));
  auto started = Admit(1);
  scheduler_.SetTransfer(started[0].batch, started[0].pos, 77);
  std::vector<Scheduler::Decision> out;
  scheduler_.ExpireDeadline(started[0].batch, /*cut_running=*/true, &out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].kind, Kind::kAbortAtDeadline);
  EXPECT_EQ(out[0].transfer, 77u);
  EXPECT_EQ(out[1].kind, Kind::kOutOfTime);
  out.clear();
  scheduler_.ExpireDeadline(started[0].batch, true, &out);  // idempotent
  EXPECT_TRUE(out.empty());
}

TEST_F(SchedulerTest, CancelAbortsRunningAndCancelsTheRest) {
  Add(1, Specs({"http://a/1", "http://a/2", "http://a/3"}), Limits(1));
  auto started = Admit(1);
  std::vector<Scheduler::Decision> out;
  scheduler_.Cancel(started[0].batch, &out);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].kind, Kind::kAbortCancelled);
  EXPECT_EQ(out[1].kind, Kind::kCancelled);
  EXPECT_EQ(out[2].kind, Kind::kCancelled);
  Scheduler::Batch* batch = started[0].batch;
  for (const auto& d : out) Finish(d);
  EXPECT_EQ(scheduler_.Find(1), nullptr);  // forgotten after the last
  (void)batch;
  EXPECT_EQ(scheduler_.batch_count(), 0u);
}

TEST_F(SchedulerTest, RetryGoesToTheFrontOfItsHostQueue) {
  Add(1, Specs({"http://a/1", "http://a/2", "http://a/3"}), Limits(1));
  auto first = Admit(1);
  ASSERT_EQ(first.size(), 1u);
  scheduler_.AttemptEnded(first[0].batch, first[0].pos);
  FetchedResponse last;
  last.http_status = 503;
  scheduler_.ScheduleRetry(first[0].batch, first[0].pos, kT0 + absl::Seconds(2),
                           last);
  // Meanwhile the slot goes to the next request.
  auto second = Admit(1);
  EXPECT_EQ(Started(second), (std::vector<std::string>{"1:http://a/2"}));
  Finish(second[0]);
  std::vector<Scheduler::Decision> out;
  scheduler_.RunTimers(kT0 + absl::Seconds(2), &out);
  EXPECT_TRUE(out.empty());
  auto third = Admit(1, kT0 + absl::Seconds(2));
  EXPECT_EQ(Started(third), (std::vector<std::string>{"1:http://a/1"}));
  EXPECT_EQ(scheduler_.attempts(third[0].batch, third[0].pos), 2);
}

TEST_F(SchedulerTest, RetryOverTakenByTheDeadlineKeepsItsLastOutcome) {
  BatchLimits limits = Limits(1);
  limits.deadline = kT0 + absl::Seconds(1);
  Add(1, Specs({"http://a/1"}), limits);
  auto first = Admit(1);
  scheduler_.AttemptEnded(first[0].batch, first[0].pos);
  FetchedResponse last;
  last.http_status = 503;
  scheduler_.ScheduleRetry(first[0].batch, first[0].pos, kT0 + absl::Seconds(5),
                           last);
  std::vector<Scheduler::Decision> out;
  scheduler_.RunTimers(kT0 + absl::Seconds(1), &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].kind, Kind::kOutOfTime);
  auto kept = scheduler_.TakeLastOutcome(out[0].batch, out[0].pos);
  ASSERT_TRUE(kept.has_value());
  EXPECT_EQ(kept->http_status, 503);
}

TEST_F(SchedulerTest, HostCooldownHoldsBackEveryBatch) {
  Add(1, Specs({"http://a/1"}), Limits(4));
  Add(2, Specs({"http://a/2", "http://b/1"}), Limits(4));
  hosts_.StartCooldown("http://a:80", kT0 + absl::Seconds(3), kT0);
  EXPECT_EQ(Started(Admit(10)), (std::vector<std::string>{"2:http://b/1"}));
  EXPECT_EQ(Started(Admit(10, kT0 + absl::Seconds(3))),
            (std::vector<std::string>{"1:http://a/1", "2:http://a/2"}));
}

TEST_F(SchedulerTest, ReportsOriginalIndicesOfASubset) {
  std::vector<FetchSpec> specs = Specs({"http://a/x", "http://a/y"});
  specs[0].index = 41;
  specs[1].index = 7;
  Add(1, std::move(specs), Limits(4));
  auto d = Admit(4);
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(scheduler_.spec(d[0].batch, d[0].pos).index, 41u);
  EXPECT_EQ(scheduler_.spec(d[1].batch, d[1].pos).index, 7u);
}

TEST(HostGovernor, CooldownOnlyExtendsAndOutlivesItsBatches) {
  HostGovernor hosts;
  HostGovernor::Host* a = hosts.Ref("http://a:80");
  hosts.StartCooldown("http://a:80", kT0 + absl::Seconds(5), kT0);
  hosts.StartCooldown("http://a:80", kT0 + absl::Seconds(1), kT0);
  EXPECT_FALSE(hosts.Open(*a, kT0 + absl::Seconds(4)));
  EXPECT_TRUE(hosts.Open(*a, kT0 + absl::Seconds(5)));
  hosts.Unref(a);
  // No batch refers to it, but its cooldown still holds the next one back.
  HostGovernor::Host* again = hosts.Ref("http://a:80");
  EXPECT_FALSE(hosts.Open(*again, kT0 + absl::Seconds(4)));
  hosts.Unref(again);
}

TEST(HostGovernor, CountsTransfersAcrossBatchesAndForgetsIdleHosts) {
  HostGovernor hosts;
  HostGovernor::Host* a1 = hosts.Ref("http://a:80");
  HostGovernor::Host* a2 = hosts.Ref("http://a:80");
  EXPECT_EQ(a1, a2);
  hosts.TransferStarted(*a1);
  hosts.TransferStarted(*a2);
  EXPECT_EQ(a1->in_flight(), 2);
  hosts.TransferEnded(*a1);
  hosts.TransferEnded(*a2);
  hosts.Unref(a1);
  hosts.Unref(a2);
  EXPECT_EQ(hosts.size(), 0u);
}

TEST(TimerQueue, PopsDueEntriesInTimeThenPushOrder) {
  TimerQueue<int> timers;
  timers.Push(kT0 + absl::Seconds(2), 1);
  timers.Push(kT0 + absl::Seconds(1), 2);
  timers.Push(kT0 + absl::Seconds(1), 3);
  EXPECT_EQ(timers.next_at(), kT0 + absl::Seconds(1));
  std::vector<int> due;
  timers.PopDue(kT0 + absl::Seconds(1), &due);
  EXPECT_EQ(due, (std::vector<int>{2, 3}));
  timers.PopDue(kT0 + absl::Seconds(5), &due);
  EXPECT_EQ(due, (std::vector<int>{2, 3, 1}));
  EXPECT_TRUE(timers.empty());
}

}  // namespace
}  // namespace batchfetch
