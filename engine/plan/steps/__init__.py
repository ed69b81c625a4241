"""Step executors, one module per `use:` name, registered in engine.plan."""
