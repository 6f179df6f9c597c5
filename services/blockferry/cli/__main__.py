from blockferry.cli import main

main()
