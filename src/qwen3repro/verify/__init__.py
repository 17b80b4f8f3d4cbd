"""Verify: does the run reproduce the committed reference (config/reference/<model>.yaml)?"""
