"""What a job leaves on disk: run folders, the one job starter, the event stream, the inspection store."""
