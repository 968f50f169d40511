import type { ExpoConfig } from 'expo/config';

const config: ExpoConfig = {
  name: 'HiveSync Expo Router App',
  slug: 'hivesync-expo-router-app',
  version: '1.0.0',
  scheme: 'hivesync-router',
  platforms: ['ios', 'android'],
  icon: './assets/hive.png',
  plugins: ['expo-router'],
};

export default config;
