"""Running a grid of points across MPI ranks: the rank-0 scheduler (`scheduler`), the team of ranks with
heartbeats and deadlines (`ranks`), fault injection for tests (`faults`) and process checks (`processes`).
"""

