"""The daemon: the loop that feeds events to the pure core and carries out its
actions (`loop`), the lease calls it runs as tasks (`leasecalls`), the node-start
pipeline (`noderun`), the status view it publishes (`status`), and the process entry
point (`python -m supervisor.daemon`, `__main__`).

May import everything below it: `core`, `lease`, `node`, `observe`, `config`,
`clock`. Nothing imports the daemon but the command line.
"""
