"""Activities run one at a time through Temporal's ActivityEnvironment against the stack's real services."""
