// HealthDecider and HealthChecker: when the server is SERVING, driven by
// hand-made probe results and a FakeClock (no database, no engine, no
// sleeps).
#include "service/server/health_checker.h"

#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "service/base/log.h"
#include "service/fetch/fetch_engine.h"
#include "tests/support/fake_clock.h"

namespace batchfetch {
namespace {

using Change = HealthDecider::Change;
using testing::FakeClock;

constexpr absl::Duration kStallLimit = absl::Seconds(3);

HealthDecider::Probe Probe(absl::Status database, uint64_t turns) {
  HealthDecider::Probe probe;
  probe.database = std::move(database);
  probe.loop_turns = turns;
  return probe;
}

TEST(HealthDeciderTest, ServesWhileTheDatabaseAnswersAndTheLoopTurns) {
  FakeClock clock;
  HealthDecider decider(kStallLimit);
  std::vector<Change> changes;
  EXPECT_TRUE(decider.serving());  // before any probe: start-up reached both
  decider.Observe(clock.MonoNow(), Probe(absl::OkStatus(), 1), &changes);
  clock.Advance(absl::Seconds(1));
  decider.Observe(clock.MonoNow(), Probe(absl::OkStatus(), 2), &changes);
  EXPECT_TRUE(decider.serving());
  EXPECT_TRUE(changes.empty());
}

TEST(HealthDeciderTest, OneFailedPingMakesItNotServingAndOneSuccessBack) {
  FakeClock clock;
  HealthDecider decider(kStallLimit);
  std::vector<Change> changes;
  decider.Observe(clock.MonoNow(), Probe(absl::UnavailableError("gone"), 1),
                  &changes);
  EXPECT_FALSE(decider.serving());
  EXPECT_FALSE(decider.database_reachable());
  EXPECT_EQ(changes, std::vector<Change>{Change::kDatabaseUnreachable});
  changes.clear();
  clock.Advance(absl::Seconds(1));
  decider.Observe(clock.MonoNow(), Probe(absl::UnavailableError("gone"), 2),
                  &changes);
  EXPECT_TRUE(changes.empty()) << "a transition is reported once";
  clock.Advance(absl::Seconds(1));
  decider.Observe(clock.MonoNow(), Probe(absl::OkStatus(), 3), &changes);
  EXPECT_TRUE(decider.serving());
  EXPECT_EQ(changes, std::vector<Change>{Change::kDatabaseReachable});
}

TEST(HealthDeciderTest, WithoutADatabaseOnlyTheLoopCounts) {
  FakeClock clock;
  HealthDecider decider(kStallLimit);
  std::vector<Change> changes;
  HealthDecider::Probe probe;  // no database
  probe.loop_turns = 7;
  decider.Observe(clock.MonoNow(), probe, &changes);
  EXPECT_TRUE(decider.serving());
  EXPECT_TRUE(changes.empty());
}

TEST(HealthDeciderTest, ALoopWhoseCountStopsIsStalledAfterTheLimit) {
  FakeClock clock;
  HealthDecider decider(kStallLimit);
  std::vector<Change> changes;
  decider.Observe(clock.MonoNow(), Probe(absl::OkStatus(), 5), &changes);
  clock.Advance(kStallLimit - absl::Milliseconds(1));
  decider.Observe(clock.MonoNow(), Probe(absl::OkStatus(), 5), &changes);
  EXPECT_TRUE(decider.serving()) << "not yet past the limit";
  clock.Advance(absl::Milliseconds(1));
  decider.Observe(clock.MonoNow(), Probe(absl::OkStatus(), 5), &changes);
  EXPECT_FALSE(decider.serving());
  EXPECT_FALSE(decider.loop_alive());
  EXPECT_EQ(changes, std::vector<Change>{Change::kLoopStalled});
  changes.clear();
  clock.Advance(absl::Seconds(1));
  decider.Observe(clock.MonoNow(), Probe(absl::OkStatus(), 6), &changes);
  EXPECT_TRUE(decider.serving());
  EXPECT_EQ(changes, std::vector<Change>{Change::kLoopAlive});
}

TEST(HealthDeciderTest, DrainingIsNotServingForGood) {
  FakeClock clock;
  HealthDecider decider(kStallLimit);
  std::vector<Change> changes;
  decider.SetDraining();
  decider.Observe(clock.MonoNow(), Probe(absl::OkStatus(), 1), &changes);
  clock.Advance(absl::Seconds(1));
  decider.Observe(clock.MonoNow(), Probe(absl::OkStatus(), 2), &changes);
  EXPECT_FALSE(decider.serving());
  EXPECT_TRUE(decider.draining());
}

// The checker around the decider: probes, wakes the loop, publishes, logs.
class HealthCheckerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SetLogSinkForTest(
        [this](std::string_view line) { log_.emplace_back(line); });
  }
  void TearDown() override { SetLogSinkForTest(nullptr); }

  HealthChecker::Probes Probes() {
    HealthChecker::Probes probes;
    probes.ping_database = [this] { return database_; };
    probes.loop_turns = [this] { return turns_; };
    probes.wake_loop = [this] { ++wakes_; };
    return probes;
  }
  bool LogHas(const std::string& event) const {
    for (const std::string& line : log_) {
      if (line.find("\"event\":\"" + event + "\"") != std::string::npos) {
        return true;
      }
    }
    return false;
  }

  FakeClock clock_;
  absl::Status database_;
  uint64_t turns_ = 0;
  int wakes_ = 0;
  std::vector<bool> published_;
  std::vector<std::string> log_;
};

TEST_F(HealthCheckerTest, PublishesEachVerdictAndLogsDatabaseTransitions) {
  HealthChecker checker(
      Probes(), [this](bool serving) { published_.push_back(serving); },
      HealthChecker::Options{}, &clock_);
  EXPECT_TRUE(checker.CheckOnce());
  database_ = absl::UnavailableError("connection refused");
  ++turns_;
  clock_.Advance(absl::Seconds(1));
  EXPECT_FALSE(checker.CheckOnce());
  EXPECT_TRUE(LogHas("database_unreachable"));
  EXPECT_FALSE(LogHas("database_reachable"));
  database_ = absl::OkStatus();
  ++turns_;
  clock_.Advance(absl::Seconds(1));
  EXPECT_TRUE(checker.CheckOnce());
  EXPECT_TRUE(LogHas("database_reachable"));
  EXPECT_EQ(published_, (std::vector<bool>{true, false, true}));
  EXPECT_EQ(wakes_, 3) << "each check wakes the loop for the next one";
}

TEST_F(HealthCheckerTest, AStuckLoopIsNotServingAndLogged) {
  HealthChecker::Options options;
  options.loop_stall_limit = absl::Seconds(3);
  HealthChecker checker(
      Probes(), [this](bool serving) { published_.push_back(serving); },
      options, &clock_);
  EXPECT_TRUE(checker.CheckOnce());
  clock_.Advance(absl::Seconds(3));  // the count never moved
  EXPECT_FALSE(checker.CheckOnce());
  EXPECT_TRUE(LogHas("engine_loop_stalled"));
}

TEST_F(HealthCheckerTest, DrainingPublishesNotServingAtOnceAndStays) {
  HealthChecker checker(
      Probes(), [this](bool serving) { published_.push_back(serving); },
      HealthChecker::Options{}, &clock_);
  EXPECT_TRUE(checker.CheckOnce());
  checker.SetDraining();
  EXPECT_EQ(published_, (std::vector<bool>{true, false}));
  ++turns_;
  EXPECT_FALSE(checker.CheckOnce());
  EXPECT_EQ(published_.back(), false);
}

// The database client wants its per-thread setup on every thread that talks
// to it: the checker's first probe runs on its own thread, between
// thread_init and thread_end, and Start returns only once it was published.
TEST_F(HealthCheckerTest, ProbesRunOnTheCheckerThreadBetweenItsThreadHooks) {
  std::vector<std::string> order;  // checker thread only, until joined
  std::thread::id init_thread, ping_thread, end_thread;
  HealthChecker::Probes probes = Probes();
  probes.thread_init = [&] {
    init_thread = std::this_thread::get_id();
    order.push_back("init");
  };
  probes.ping_database = [&] {
    ping_thread = std::this_thread::get_id();
    order.push_back("ping");
    return absl::OkStatus();
  };
  probes.thread_end = [&] {
    end_thread = std::this_thread::get_id();
    order.push_back("end");
  };
  HealthChecker::Options options;
  options.interval = absl::Hours(1);  // only Start's check runs
  HealthChecker checker(
      std::move(probes),
      [this](bool serving) { published_.push_back(serving); }, options,
      &clock_);
  checker.Start();
  EXPECT_EQ(published_, (std::vector<bool>{true}));  // SERVING at once
  checker.Stop();
  EXPECT_EQ(order, (std::vector<std::string>{"init", "ping", "end"}));
  EXPECT_NE(ping_thread, std::this_thread::get_id());
  EXPECT_EQ(init_thread, ping_thread);
  EXPECT_EQ(end_thread, ping_thread);
}

// The heartbeat the checker reads: an idle engine loop completes a turn
// after each WakeLoop (on its own thread, hence the bounded wait).
TEST(EngineHeartbeatTest, AnIdleLoopTurnsAfterAWake) {
  auto engine = FetchEngine::Create(FetchEngine::Options{});
  ASSERT_TRUE(engine.ok()) << engine.status();
  for (int wake = 0; wake < 3; ++wake) {
    const uint64_t before = (*engine)->loop_turns();
    (*engine)->WakeLoop();
    const absl::Time give_up = absl::Now() + absl::Seconds(10);
    while ((*engine)->loop_turns() == before && absl::Now() < give_up) {
      absl::SleepFor(absl::Milliseconds(1));
    }
    EXPECT_GT((*engine)->loop_turns(), before) << "wake " << wake;
  }
}

}  // namespace
}  // namespace batchfetch
