package phases

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/meshmigrate/kubectl-meshmigrate/pkg/plan"
)

const (
	alice = "alice@laptop pid 1 run aaaaaa"
	bob   = "bob@ci pid 2 run bbbbbb"
)

// fakeCluster is an API server whose Lease writes are compare-and-swap on
// the resourceVersion, as a real one's are (the fake's tracker does not
// check it).
func fakeCluster() *Cluster {
	cs := fake.NewClientset()
	tracker := cs.Tracker()
	cs.PrependReactor("create", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		l := a.(k8stesting.CreateAction).GetObject().(*coordinationv1.Lease).DeepCopy()
		l.ResourceVersion = "1"
		return true, l, tracker.Create(a.GetResource(), l, a.GetNamespace())
	})
	cs.PrependReactor("update", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		l := a.(k8stesting.UpdateAction).GetObject().(*coordinationv1.Lease).DeepCopy()
		cur, err := tracker.Get(a.GetResource(), a.GetNamespace(), l.Name)
		if err != nil {
			return true, nil, err
		}
		if rv := cur.(*coordinationv1.Lease).ResourceVersion; rv != l.ResourceVersion {
			return true, nil, apierrors.NewConflict(a.GetResource().GroupResource(), l.Name,
				fmt.Errorf("resourceVersion %s, stored %s: the object has been modified", l.ResourceVersion, rv))
		}
		n, _ := strconv.Atoi(l.ResourceVersion)
		l.ResourceVersion = strconv.Itoa(n + 1)
		return true, l, tracker.Update(a.GetResource(), l, a.GetNamespace())
	})
	return &Cluster{Kube: cs}
}

// at is a clock stopped at t (a wait on it would pass at once).
func at(t time.Time) *runClock { return newClock(t) }

// runClock is one run's clock: it moves only when the test moves it, or
// when a wait on it (the pause between lock attempts) passes, which it does
// at once, running meanwhile (another run's renewal, say) first.
type runClock struct {
	mu        sync.Mutex
	t         time.Time
	meanwhile func()
}

var _ clock.Clock = (*runClock)(nil)

func newClock(t time.Time) *runClock { return &runClock{t: t} }

func (c *runClock) now() time.Time { return c.Now() }

func (c *runClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *runClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

func (c *runClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// NewTimer passes d at once: the timer has fired when it is returned.
func (c *runClock) NewTimer(d time.Duration) clock.Timer {
	if c.meanwhile != nil {
		c.meanwhile()
	}
	c.add(d)
	ch := make(chan time.Time, 1)
	ch <- c.Now()
	return firedTimer(ch)
}

func (c *runClock) After(d time.Duration) <-chan time.Time { return c.NewTimer(d).C() }
func (c *runClock) Tick(d time.Duration) <-chan time.Time  { return c.NewTimer(d).C() }
func (c *runClock) Sleep(d time.Duration)                  { <-c.NewTimer(d).C() }

type firedTimer chan time.Time

func (t firedTimer) C() <-chan time.Time      { return t }
func (t firedTimer) Stop() bool               { return false }
func (t firedTimer) Reset(time.Duration) bool { return false }

func holder(t *testing.T, c *Cluster, ns string) string {
	t.Helper()
	l, err := c.Kube.CoordinationV1().Leases(ns).Get(context.Background(), LeaseName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("read the lease: %v", err)
	}
	if l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

func TestAcquireCreatesTheLease(t *testing.T) {
	ctx := context.Background()
	c := fakeCluster()
	lk, err := c.Acquire(ctx, "shop", alice, DefaultLeaseDuration, 0, at(t0))
	if err != nil {
		t.Fatal(err)
	}
	if lk.TookOver != "" {
		t.Errorf("TookOver = %q on a fresh lock", lk.TookOver)
	}
	l, err := c.Kube.CoordinationV1().Leases("shop").Get(ctx, "meshmigrate-lock", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *l.Spec.HolderIdentity != alice || *l.Spec.LeaseDurationSeconds != 30 || !l.Spec.RenewTime.Time.Equal(t0) {
		t.Errorf("lease spec = holder %q, %ds, renewed %s", *l.Spec.HolderIdentity, *l.Spec.LeaseDurationSeconds, l.Spec.RenewTime)
	}
	if l.Labels[plan.LabelManagedBy] != plan.ManagedBy || l.Labels[LabelComponent] != "lock" {
		t.Errorf("lease labels = %v", l.Labels)
	}
	in, err := c.LockState(ctx, "shop")
	if err != nil || in == nil || !in.Held || in.Holder != alice || !in.Expires.Equal(t0.Add(30*time.Second)) {
		t.Errorf("LockState = %+v, %v", in, err)
	}
}

func TestAcquireAgainBySameHolder(t *testing.T) {
	ctx := context.Background()
	c := fakeCluster()
	if _, err := c.Acquire(ctx, "shop", alice, DefaultLeaseDuration, 0, at(t0)); err != nil {
		t.Fatal(err)
	}
	lk, err := c.Acquire(ctx, "shop", alice, DefaultLeaseDuration, 0, at(t0.Add(time.Second)))
	if err != nil {
		t.Fatalf("re-acquiring one's own lock: %v", err)
	}
	if lk.TookOver != "" {
		t.Errorf("re-acquiring one's own lock took it over from %q", lk.TookOver)
	}
}

func TestAcquireLockedNamesTheHolder(t *testing.T) {
	ctx := context.Background()
	c := fakeCluster()
	if _, err := c.Acquire(ctx, "shop", alice, DefaultLeaseDuration, 0, at(t0)); err != nil {
		t.Fatal(err)
	}
	// --wait-for-lock 0 fails at once, even on a clock that does not move.
	waitCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	start := time.Now()
	_, err := c.Acquire(waitCtx, "shop", bob, DefaultLeaseDuration, 0, at(t0.Add(10*time.Second)))
	if d := time.Since(start); d > time.Second || strings.Contains(fmt.Sprint(err), "stopped waiting") {
		t.Errorf("wait 0 waited %s: %v", d, err)
	}
	var locked *LockedError
	if !errors.As(err, &locked) {
		t.Fatalf("second run: %v, want a *LockedError", err)
	}
	if locked.Holder != alice || locked.Namespace != "shop" || !locked.Expires.Equal(t0.Add(30*time.Second)) {
		t.Errorf("LockedError = %+v", locked)
	}
	for _, want := range []string{`namespace shop is locked by "` + alice + `"`, "--wait-for-lock", "`kubectl meshmigrate unlock -n shop`"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if h := holder(t, c, "shop"); h != alice {
		t.Errorf("the failed attempt changed the holder to %q", h)
	}
}

// Two runs whose clocks differ by more than the lease duration: the run
// whose clock is ahead must not take over a lease its holder is renewing.
// The holder's renew time is never compared with the reader's clock.
func TestAcquireIgnoresClockSkew(t *testing.T) {
	ctx := context.Background()
	c := fakeCluster()
	alice0 := newClock(t0)
	mine, err := c.Acquire(ctx, "shop", alice, DefaultLeaseDuration, 0, alice0)
	if err != nil {
		t.Fatal(err)
	}
	alice0.add(10 * time.Second)
	if err := mine.Renew(ctx, alice0.now()); err != nil {
		t.Fatal(err)
	}
	// Bob's clock is 2 minutes ahead of Alice's: by it, her lease
	// "expired" 100 s ago, though she renewed it a moment ago.
	bobs := newClock(alice0.now().Add(2 * time.Minute))
	_, err = c.Acquire(ctx, "shop", bob, DefaultLeaseDuration, 0, bobs)
	var locked *LockedError
	if !errors.As(err, &locked) || locked.Holder != alice {
		t.Fatalf("Bob, clock 2m ahead, --wait-for-lock 0: %v, want Alice's LockedError", err)
	}
	if h := holder(t, c, "shop"); h != alice {
		t.Fatalf("Bob took over a live lock on his clock alone: holder %q", h)
	}

	// Waiting longer than the duration does not help while Alice renews
	// (every pause between Bob's attempts, on her own clock).
	bobs.meanwhile = func() {
		alice0.add(2 * time.Second)
		if err := mine.Renew(ctx, alice0.now()); err != nil {
			t.Errorf("Alice's renewal: %v", err)
		}
	}
	start := bobs.now()
	_, err = c.Acquire(ctx, "shop", bob, DefaultLeaseDuration, 2*time.Minute, bobs)
	if !errors.As(err, &locked) || !strings.Contains(err.Error(), "another run is migrating it (it renewed the lock while this run waited)") {
		t.Fatalf("Bob waiting 2m for a renewed lock: %v", err)
	}
	if waited := bobs.now().Sub(start); waited < 2*time.Minute {
		t.Errorf("Bob gave up after %s of his 2m", waited)
	}
	if h := holder(t, c, "shop"); h != alice {
		t.Errorf("holder %q after Bob waited, want Alice (she kept renewing)", h)
	}
}

// A dead holder's lease (never renewed again) is taken over once the
// waiter has watched it unchanged for the lease duration, not before, and
// a wait too short to watch that long says so.
func TestAcquireTakesOverADeadLockAfterWatchingIt(t *testing.T) {
	ctx := context.Background()
	c := fakeCluster()
	if _, err := c.Acquire(ctx, "shop", alice, DefaultLeaseDuration, 0, at(t0)); err != nil {
		t.Fatal(err)
	}
	// Alice's run died. Bob comes long after, by any clock: watching
	// still decides, not the renew time.
	bobs := newClock(t0.Add(5 * time.Minute))
	var holders []string
	bobs.meanwhile = func() { holders = append(holders, holder(t, c, "shop")) }
	for _, tc := range []struct {
		wait time.Duration
		want string
	}{
		{0, "another run is migrating it, or it died; a dead holder's lock is taken over only after watching it unrenewed for 30s: wait for it (--wait-for-lock 1m), or, if you know that run is dead, `kubectl meshmigrate unlock -n shop`"},
		{20 * time.Second, "it has not been renewed in the 20s this run watched it, and a dead holder's lock is taken over only after watching it unrenewed for 30s: wait longer (--wait-for-lock 1m), or, if you know that run is dead, `kubectl meshmigrate unlock -n shop`"},
	} {
		_, err := c.Acquire(ctx, "shop", bob, DefaultLeaseDuration, tc.wait, bobs)
		var locked *LockedError
		if !errors.As(err, &locked) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--wait-for-lock %s: %v\nwant it to say %q", tc.wait, err, tc.want)
		}
		if h := holder(t, c, "shop"); h != alice {
			t.Fatalf("--wait-for-lock %s took over the lock (holder %q) before watching it for 30s", tc.wait, h)
		}
	}

	start := bobs.now()
	holders = nil
	lk, err := c.Acquire(ctx, "shop", bob, DefaultLeaseDuration, time.Minute, bobs)
	if err != nil {
		t.Fatalf("--wait-for-lock 1m, dead holder: %v", err)
	}
	if lk.TookOver != alice || holder(t, c, "shop") != bob {
		t.Errorf("TookOver %q, holder %q: want Bob, taken from Alice (apply reports whose lock it took)", lk.TookOver, holder(t, c, "shop"))
	}
	in, _ := c.LockState(ctx, "shop")
	if took := in.Acquired.Sub(start); took < DefaultLeaseDuration || took >= DefaultLeaseDuration+lockPoll {
		t.Errorf("took over %s after the first look, want once it had watched it for 30s", took)
	}
	for i, h := range holders {
		if h != alice {
			t.Errorf("pause %d: holder %q before the takeover", i, h)
		}
	}
}

// A lease whose holder let go is taken at once, even on a clock far
// behind its renew time.
func TestAcquireTakesAReleasedLockAtOnce(t *testing.T) {
	ctx := context.Background()
	c := fakeCluster()
	lk, err := c.Acquire(ctx, "shop", alice, DefaultLeaseDuration, 0, at(t0))
	if err != nil {
		t.Fatal(err)
	}
	if err := lk.Release(ctx); err != nil {
		t.Fatal(err)
	}
	lk, err = c.Acquire(ctx, "shop", bob, DefaultLeaseDuration, 0, at(t0.Add(-time.Hour)))
	if err != nil {
		t.Fatalf("a released lock: %v", err)
	}
	if lk.TookOver != "" || holder(t, c, "shop") != bob {
		t.Errorf("took over %q, holder %q: want Bob, without a takeover", lk.TookOver, holder(t, c, "shop"))
	}
}

func TestRenewAfterTakeoverFails(t *testing.T) {
	ctx := context.Background()
	c := fakeCluster()
	mine, err := c.Acquire(ctx, "shop", alice, DefaultLeaseDuration, 0, at(t0))
	if err != nil {
		t.Fatal(err)
	}
	if err := mine.Renew(ctx, t0.Add(10*time.Second)); err != nil {
		t.Fatalf("renewing a held lock: %v", err)
	}
	in, _ := c.LockState(ctx, "shop")
	if !in.Renewed.Equal(t0.Add(10 * time.Second)) {
		t.Errorf("renewed %s, want t0+10s", in.Renewed)
	}
	// Alice stalled and Bob, having watched her lease unrenewed for 30s,
	// took over: her run must stop.
	bobs := newClock(t0.Add(20 * time.Second))
	bobs.meanwhile = nil
	if _, err := c.Acquire(ctx, "shop", bob, DefaultLeaseDuration, time.Minute, bobs); err != nil {
		t.Fatal(err)
	}
	err = mine.Renew(ctx, t0.Add(61*time.Second))
	if err == nil || !strings.Contains(err.Error(), "another run may have taken it over") {
		t.Errorf("renewing a lock taken over: %v", err)
	}
	if h := holder(t, c, "shop"); h != bob {
		t.Errorf("the stale renewal gave the lock back to %q", h)
	}
}

func TestReleaseAndUnlock(t *testing.T) {
	ctx := context.Background()
	c := fakeCluster()
	lk, err := c.Acquire(ctx, "shop", alice, DefaultLeaseDuration, 0, at(t0))
	if err != nil {
		t.Fatal(err)
	}
	if err := lk.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if h := holder(t, c, "shop"); h != "" {
		t.Errorf("holder after release = %q", h)
	}
	if in, _ := c.LockState(ctx, "shop"); in == nil || in.Held {
		t.Errorf("LockState after release = %+v, want a free lease", in)
	}
	// Released: Bob gets it at once, without a takeover.
	lk, err = c.Acquire(ctx, "shop", bob, DefaultLeaseDuration, 0, at(t0.Add(time.Second)))
	if err != nil {
		t.Fatalf("acquire after release: %v", err)
	}
	if lk.TookOver != "" {
		t.Errorf("acquire after release took over from %q", lk.TookOver)
	}

	before, err := c.Unlock(ctx, "shop")
	if err != nil {
		t.Fatal(err)
	}
	if before == nil || !before.Held || before.Holder != bob {
		t.Errorf("Unlock returned %+v, want Bob's lock", before)
	}
	if h := holder(t, c, "shop"); h != "" {
		t.Errorf("holder after unlock = %q", h)
	}
	if again, err := c.Unlock(ctx, "shop"); err != nil || again == nil || again.Held {
		t.Errorf("unlocking a free lock: %+v, %v", again, err)
	}
	if never, err := c.Unlock(ctx, "payments"); err != nil || never != nil {
		t.Errorf("unlocking a namespace never locked: %+v, %v", never, err)
	}
}

func TestAcquireAllReleasesOnFailure(t *testing.T) {
	ctx := context.Background()
	c := fakeCluster()
	if _, err := c.Acquire(ctx, "shop", bob, DefaultLeaseDuration, 0, at(t0)); err != nil {
		t.Fatal(err)
	}
	// In name order: cart is taken, then shop is Bob's.
	ls, err := c.AcquireAll(ctx, []string{"shop", "cart"}, alice, DefaultLeaseDuration, 0, at(t0), func(error) {})
	var locked *LockedError
	if !errors.As(err, &locked) || locked.Namespace != "shop" || ls != nil {
		t.Fatalf("AcquireAll = %v, %v; want shop locked by Bob", ls, err)
	}
	if h := holder(t, c, "cart"); h != "" {
		t.Errorf("cart still held by %q after the run gave up", h)
	}
	if h := holder(t, c, "shop"); h != bob {
		t.Errorf("shop holder = %q, want Bob untouched", h)
	}

	ls, err = c.AcquireAll(ctx, []string{"shop", "cart", "payments"}, bob, DefaultLeaseDuration, 0, at(t0), func(error) {})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, lk := range ls.Held() {
		got = append(got, lk.ns)
	}
	if strings.Join(got, ",") != "cart,payments,shop" {
		t.Errorf("locked %v, want name order", got)
	}
	if err := ls.Release(ctx); err != nil {
		t.Fatal(err)
	}
	for _, ns := range got {
		if h := holder(t, c, ns); h != "" {
			t.Errorf("%s still held by %q after Release", ns, h)
		}
	}
}

func TestAcquireWaitsForRelease(t *testing.T) {
	ctx := context.Background()
	c := fakeCluster()
	theirs, err := c.Acquire(ctx, "shop", bob, DefaultLeaseDuration, 0, clock.RealClock{})
	if err != nil {
		t.Fatal(err)
	}
	released := make(chan error, 1)
	go func() {
		time.Sleep(100 * time.Millisecond)
		released <- theirs.Release(ctx)
	}()
	start := time.Now()
	lk, err := c.Acquire(ctx, "shop", alice, DefaultLeaseDuration, 10*time.Second, clock.RealClock{})
	if err != nil {
		t.Fatalf("waiting for the lock: %v", err)
	}
	if err := <-released; err != nil {
		t.Fatal(err)
	}
	if lk.TookOver != "" || holder(t, c, "shop") != alice {
		t.Errorf("took over %q, holder %q: want Alice, after Bob let go", lk.TookOver, holder(t, c, "shop"))
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("waited %s for a lock released after 100ms", d)
	}
}

func TestAcquireStopsWaitingWhenCancelled(t *testing.T) {
	c := fakeCluster()
	if _, err := c.Acquire(context.Background(), "shop", bob, DefaultLeaseDuration, 0, clock.RealClock{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := c.Acquire(ctx, "shop", alice, DefaultLeaseDuration, time.Minute, clock.RealClock{})
	var locked *LockedError
	if !errors.As(err, &locked) || locked.Holder != bob || !strings.Contains(err.Error(), "stopped waiting") {
		t.Errorf("cancelled wait: %v, want Bob's LockedError and why it stopped", err)
	}
}

// A rollback of a namespace without a checkpoint removes a lock a full
// rollback left behind only if nobody holds it: a held lock past its
// expiry by this clock may be a live run on a clock that differs.
func TestRollbackWithoutCheckpointLeavesAHeldLock(t *testing.T) {
	ctx := context.Background()
	c := fakeCluster()
	lk, err := c.Acquire(ctx, "shop", alice, DefaultLeaseDuration, 0, at(t0))
	if err != nil {
		t.Fatal(err)
	}
	ex := &Executor{Cluster: c, Clock: clocktesting.NewFakeClock(t0.Add(time.Hour)), Options: Options{Identity: bob}}
	_, err = ex.Rollback(ctx, []string{"shop"}, "")
	if err == nil || !strings.Contains(err.Error(), `its lock is held by "`+alice+`"`) || !strings.Contains(err.Error(), "`kubectl meshmigrate unlock -n shop`") {
		t.Errorf("rollback, lock held by Alice: %v, want a refusal naming her and unlock", err)
	}
	if h := holder(t, c, "shop"); h != alice {
		t.Fatalf("holder %q after the rollback, want Alice's lock untouched", h)
	}
	if err := lk.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := ex.Rollback(ctx, []string{"shop"}, ""); err != nil {
		t.Fatalf("rollback, lock released: %v", err)
	}
	if in, err := c.LockState(ctx, "shop"); err != nil || in != nil {
		t.Errorf("the released lock is still there: %+v, %v", in, err)
	}
}
