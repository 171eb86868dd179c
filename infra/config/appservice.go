package config

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/cirrus-matrix/cirrus/core/appservice"
)

// loadAppServices reads the application service registrations: the YAML
// files named by CIRRUS_APPSERVICE_FILES (comma-separated paths; on Lambda,
// files bundled with the function) and/or the YAML documents held by
// CIRRUS_APPSERVICE_YAML ("---" between several). They are validated here,
// so a bad registration stops the process at start with one clear line.
func loadAppServices(get Getenv, c *Config) error {
	var regs []*appservice.Registration
	for _, path := range splitList(get("CIRRUS_APPSERVICE_FILES")) {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("CIRRUS_APPSERVICE_FILES: %v", err)
		}
		rs, err := appservice.Parse(b)
		if err != nil {
			return fmt.Errorf("CIRRUS_APPSERVICE_FILES: %s: %v", path, err)
		}
		regs = append(regs, rs...)
	}
	if y := get("CIRRUS_APPSERVICE_YAML"); strings.TrimSpace(y) != "" {
		rs, err := appservice.Parse([]byte(y))
		if err != nil {
			return fmt.Errorf("CIRRUS_APPSERVICE_YAML: %v", err)
		}
		regs = append(regs, rs...)
	}
	reg, err := appservice.NewRegistry(c.Server.Client.ServerName, regs)
	if err != nil {
		return fmt.Errorf("application services: %v", err)
	}
	a := &c.Server.AppServices
	a.Registry = reg
	if a.MinBackoff, err = durationVar(get, "CIRRUS_APPSERVICE_RETRY_MIN", 2*time.Second); err != nil {
		return err
	}
	if a.MaxBackoff, err = durationVar(get, "CIRRUS_APPSERVICE_RETRY_MAX", 10*time.Minute); err != nil {
		return err
	}
	if a.MinBackoff <= 0 || a.MaxBackoff < a.MinBackoff {
		return fmt.Errorf("CIRRUS_APPSERVICE_RETRY_MIN=%s must be positive and at most CIRRUS_APPSERVICE_RETRY_MAX=%s", a.MinBackoff, a.MaxBackoff)
	}
	if a.QueryTimeout, err = durationVar(get, "CIRRUS_APPSERVICE_QUERY_TIMEOUT", 10*time.Second); err != nil {
		return err
	}
	c.AppServiceQueueURL = get("CIRRUS_APPSERVICE_QUEUE_URL")
	if len(regs) > 0 && c.Storage == StorageAWS && !c.CreateAWSResources && c.AppServiceQueueURL == "" {
		return fmt.Errorf("CIRRUS_APPSERVICE_QUEUE_URL is not set (needed with CIRRUS_STORAGE=aws when application services are configured)")
	}
	return nil
}
