"""Everything that speaks SQL. Handlers and the scheduler call these functions; no SQL
lives anywhere else in the package."""
