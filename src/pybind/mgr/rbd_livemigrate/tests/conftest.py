import os
import sys

# import the package without the mgr (its __init__ skips module.py then)
os.environ.setdefault('UNITTEST', '1')
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..')))
