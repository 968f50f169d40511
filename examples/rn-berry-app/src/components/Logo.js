import React from 'react';
import { Image, StyleSheet } from 'react-native';

export function Logo() {
  return <Image source={require('../../assets/hive.png')} style={styles.logo} />;
}

const styles = StyleSheet.create({
  logo: { width: 64, height: 64 },
});
