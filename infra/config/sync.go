package config

import (
	"fmt"
	"time"

	"github.com/cirrus-matrix/cirrus/core/clientsync"
)

// maxSyncWait keeps long-polls under API Gateway's 30-second integration
// timeout, with room for the answer itself.
const maxSyncWait = 29 * time.Second

// loadSync reads the /sync settings.
func loadSync(get Getenv, c *Config) error {
	d, err := durationVar(get, "CIRRUS_SYNC_MAX_WAIT", clientsync.DefaultMaxWait)
	if err != nil {
		return err
	}
	if d <= 0 || d > maxSyncWait {
		return fmt.Errorf("CIRRUS_SYNC_MAX_WAIT=%q must be more than 0 and at most %s (API Gateway ends requests at 30s)", get("CIRRUS_SYNC_MAX_WAIT"), maxSyncWait)
	}
	c.Server.Sync.MaxWait = d
	// On AWS other processes (Lambda instances) write too: waiting syncs
	// watch the streams' counters in the table as well.
	c.Server.Sync.Poll = c.Storage == StorageAWS
	return nil
}
