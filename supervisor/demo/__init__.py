"""`corda-ha-supervisor demo`: a throwaway PostgreSQL, two supervisors and a stand-in
node on this machine, walked through a scripted tour (see `supervisor.demo.tour`).

Modules: `tour` (the command), `timeline` (log lines to a readable timeline),
`postgres` (the throwaway server), `children` (process hygiene), `node` (the
stand-in node) and `pdeathsig` (an exec wrapper that ties a child to the demo).
Nothing here is imported by the supervisor itself.
"""
