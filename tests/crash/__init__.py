"""The crash suite (issue 8): a load of starts and resumes against a server process that is
killed with SIGKILL at random moments and restarted, and a checker that proves from the store
and from the client's log that nothing acknowledged was lost and no completed step ran twice.

`test_crash_suite.py` runs a bounded form on every test run; `python -m tests.crash --kills
200 --seed N` is the long form. `test_storage_faults.py` injects store faults instead of kills.
"""
