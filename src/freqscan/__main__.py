from freqscan.cli import main

main()
