package federation

// WithKeysFor is exported for the external tests.
var WithKeysFor = withKeysFor
