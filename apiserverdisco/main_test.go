package apiserverdisco_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/kubeboot/kubeboot/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testenv.LeakOptions()...) }
