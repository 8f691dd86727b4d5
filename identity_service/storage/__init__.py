"""Storage: engines and sessions (db), the tables (models), prepared statements, filter
compilation, paged listing, the event log's write side (events) and the migrations."""
