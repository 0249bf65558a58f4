"""Photos in: reading them safely, shaping them for the network, uploads and zips, the demo set. Imports only
`common`."""
