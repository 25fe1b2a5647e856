package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kubeboot/kubeboot/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.LeakOptions()...)
}

func TestJoinExample(t *testing.T) {
	c := testenv.NewCluster(t)
	spec, err := c.NewMemberSpec("node2")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out testenv.SyncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--endpoints", strings.Join(c.Endpoints(), ","), "--name", "node2",
			"--peer-url", spec.PeerURL, "--client-url", spec.ClientURL, "--data-dir", t.TempDir()}, &out)
	}()
	testenv.Eventually(t, time.Minute, 50*time.Millisecond, func() error {
		select {
		case err := <-done:
			t.Fatalf("join exited early: %v\n%s", err, out.String())
		default:
		}
		list, err := c.Client().MemberList(ctx)
		if err != nil {
			return err
		}
		voters := 0
		for _, m := range list.Members {
			if !m.IsLearner && m.Name != "" {
				voters++
			}
		}
		if voters != 2 {
			return fmt.Errorf("%d started voters, want 2", voters)
		}
		if !strings.Contains(out.String(), "is a voter") {
			return errors.New("program has not reported the promotion yet")
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("join: %v\n%s", err, out.String())
	}
}

func TestJoinExampleRejectsMissingFlags(t *testing.T) {
	if err := run(context.Background(), []string{"--name", "x"}, &bytes.Buffer{}); err == nil {
		t.Fatal("want an error for missing flags")
	}
}
