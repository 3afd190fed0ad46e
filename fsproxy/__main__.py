"""``python3 -m pysc.fsproxy --zmq ipc://PATH [--donate-sock PATH | --donate-fd FD] --mount DIR[:ro] ...``"""
import sys

from pysc.fsproxy.gofer import main

sys.exit(main())
