"""What a job leaves on disk: run folders, the one job starter, the event stream, the inspection store. Imports
`access` (jobs check the actor) and `common`; knows no training, serving or workflow."""
